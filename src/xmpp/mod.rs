//! The transports at the bottom: the component's XEP-0114 stream (`stream`)
//! and the client's c2s stream (`c2s`), reading stanzas robustly, matching IQs,
//! and reading a node page by page (`paging`).

pub mod c2s;
pub mod iq;
pub mod paging;
pub mod quickack;
pub mod stream;

pub use iq::{IqError, Pending};
pub use stream::{connect_component, ConnectError, Connection, Disconnect};
