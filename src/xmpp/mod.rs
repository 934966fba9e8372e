//! The XML stream: connecting, reading stanzas robustly, matching IQs.

pub mod iq;
pub mod quickack;
pub mod stream;

pub use iq::{IqError, Pending};
pub use stream::{connect_component, ConnectError, Connection, Disconnect};
