//! pubpresence: an XMPP external component (XEP-0114) that publishes every
//! connected user's presence and IP address into XEP-0060 pubsub nodes.
//!
//! Layout (docs/architecture.md): `wire` (payloads, parse and serialise,
//! no I/O) and `xmpp` (the component stream and the c2s stream, IQ
//! matching) at the bottom, with `config`; `component` (the service) and
//! `client` (the reference client and the web feed) on top of them, never
//! importing each other; `doctor` (the set-up check) is a command on top of
//! both; `logging` and `signals` serve the binary. The
//! throwaway servers, simulated users and benchmarks are not here: they are
//! the unpublished `pubpresence-lab` crate (`lab/`).

pub mod client;
pub mod component;
pub mod config;
pub mod doctor;
pub mod logging;
pub mod signals;
pub mod wire;
pub mod xmpp;

pub use xmpp_parsers::jid;
pub use xmpp_parsers::minidom;
