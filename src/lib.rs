//! pubpresence: an XMPP external component (XEP-0114) that publishes every
//! connected user's presence and IP address into XEP-0060 pubsub nodes.
//!
//! Layout: `wire` (payloads and stanza builders/parsers) and `xmpp` (the
//! stanza stream) at the bottom; `component` (the service) and `client`
//! (users of the service) on top of them, never importing each other.

pub mod bench;
pub mod bench_cluster;
pub mod bench_web;
pub mod client;
pub mod component;
pub mod config;
pub mod lab;
pub mod wire;
pub mod xmpp;

pub use xmpp_parsers::jid;
pub use xmpp_parsers::minidom;
