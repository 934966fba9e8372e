//! Users of the service: the c2s connection, the SPEC §6 follower and its
//! runner (`watch`), the table it draws (`board`), and simulated users (`sim`).
pub mod board;
pub mod c2s;
pub mod follow;
pub mod sim;
pub mod watch;
pub mod web;
