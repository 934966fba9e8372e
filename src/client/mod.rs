//! Users of the service, over the c2s transport (`xmpp::c2s`): the
//! follower of the client procedure (docs/protocol.md, "Client procedure")
//! and its runner (`watch`), the table it draws (`board`), the web feed
//! (`web`), and the terminal output (`terminal`).
pub mod board;
pub mod follow;
pub mod terminal;
pub mod watch;
pub mod web;
