//! The component: tracker state machine, publisher and the service loop.

mod dispatch;
pub mod ips;
pub mod metrics;
pub mod privacy;
pub mod privileges;
pub mod publisher;
pub mod replaced;
pub mod service;
pub mod small;
pub mod standby;
pub mod tracker;
mod trim;
