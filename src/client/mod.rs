//! client
pub mod c2s;
pub mod follow;
pub mod watch;
