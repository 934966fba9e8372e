//! The component: tracker state machine, publisher and the service loop.

mod dispatch;
/// How many writes the component keeps in flight (the bench's floors match it).
pub use dispatch::IN_FLIGHT as WRITES_IN_FLIGHT;
pub mod ips;
pub mod metrics;
pub mod privacy;
pub mod privileges;
pub mod publisher;
pub mod replaced;
pub mod saved;
pub mod service;
pub mod small;
pub mod standby;
pub mod tracker;
mod trim;
