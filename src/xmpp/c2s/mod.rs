//! A robust client-to-server (c2s) XMPP connection: used by the reference
//! client (`watch`), by the load generator's simulated users and by the tests.
//!
//! Why not `tokio_xmpp::Client`: its stream ends on the first stanza that
//! xmpp-parsers refuses (one `<show>bogus</show>` from any contact would log
//! us out) and it cannot write raw bytes (needed by hostile-input tests). So
//! the login reuses tokio-xmpp's pieces (`xmlstream::initiate_stream`,
//! `connect::starttls::starttls`, the SASL exchange `tokio_xmpp::client_login`)
//! and, after SASL, the stream is typed as `XmlStream<_, minidom::Element>`:
//! any well-formed stanza is read as a plain element, whatever its content,
//! and a parse error is logged and skipped.
//!
//! Why no `tokio_xmpp::connect::ServerConnector` impl: that trait must hand
//! back the stream *before* the stream features are read, but choosing between
//! STARTTLS and plaintext needs the features; and the only consumer of the
//! trait that could log us in (`client_auth`) is private to tokio-xmpp. So
//! `open_stream` below does the connector's work directly (bind the source
//! address, connect, read the features, STARTTLS or plain) and returns the
//! features with the stream.
//!
//! Behaviour of a connection:
//! - [`connect`] logs in, binds a resource (the JID's resource if it has one)
//!   and returns a handle plus a receiver of every incoming stanza, except
//!   IQ responses consumed by [`C2s::iq`] and XEP-0199 pings from the server,
//!   which are answered here. No presence is sent: that is the caller's job.
//! - A quiet stream (60 s of silence) is met with an XEP-0199 ping to the
//!   server; if the server stays silent for 20 s more, the connection is dead.
//! - When the connection ends (server closed it, I/O error, [`C2s::close`],
//!   every handle dropped), the receiver yields `None`, pending [`C2s::iq`]
//!   calls fail with [`C2sError::Disconnected`].
//! - Outgoing elements in `jabber:component:accept` (what xmpp-parsers
//!   produces in this crate, built with its `component` feature) are moved to
//!   `jabber:client` before sending: see [`client_ns`].
//! - A receiver that is not read does not block the connection: stanzas beyond
//!   its capacity are queued in memory; a dropped receiver discards stanzas
//!   (and IQ requests are then answered `service-unavailable`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_xmpp::connect::AsyncReadAndWrite;
use xmpp_parsers::jid::{FullJid, Jid};
use xmpp_parsers::minidom::rxml::{Namespace, NcName};
use xmpp_parsers::minidom::Element;

mod login;
mod task;

#[cfg(test)]
use login::connect_tcp;
use login::login;
pub use task::client_ns;
use task::Connection;

/// Silence before we ping the server; then the time it has to answer.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on the whole login (TCP, TLS, SASL, bind).
const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on each TCP connect attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on the closing handshake (our footer, the server's footer, EOF).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Capacity of the receiver handed to the caller (more is queued in memory).
const RECEIVER_CAPACITY: usize = 256;
/// Ids of our keepalive pings; their answers are swallowed.
const KEEPALIVE_PREFIX: &str = "c2s-keepalive-";

/// How to log in.
#[derive(Debug, Clone)]
pub struct C2sOptions {
    /// The account; with a resource, that resource is requested at bind,
    /// otherwise the server picks one.
    pub jid: Jid,
    pub password: String,
    /// "host:port" of the server's c2s listener; default: the JID's domain,
    /// port 5222 (no SRV lookup).
    pub server: Option<String>,
    /// Local source address to bind before connecting (e.g. 127.0.0.2).
    /// Binding before `connect` takes an ephemeral port per connection from
    /// the one system-wide range (about 28,000 on Linux), whatever the
    /// destination: a limit for very large simulated loads.
    pub bind_ip: Option<IpAddr>,
    /// Log in without TLS when the server offers no STARTTLS (tests, demos).
    /// STARTTLS is always used when offered.
    pub allow_plaintext: bool,
}

/// Why a connection or a request failed. Never contains the password.
#[derive(Debug, Clone, thiserror::Error)]
pub enum C2sError {
    #[error("invalid JID {0:?}: {1}")]
    InvalidJid(String, String),
    #[error("cannot connect to {server}: {reason}")]
    Connect { server: String, reason: String },
    #[error(
        "{server} offers no STARTTLS and allow_plaintext is false; refusing to log in without TLS"
    )]
    NoTls { server: String },
    #[error("TLS with {server} failed: {reason}")]
    Tls { server: String, reason: String },
    /// "authentication failed for alice@localhost: not-authorized"
    #[error("{0}")]
    Auth(String),
    #[error("resource binding failed: {0}")]
    Bind(String),
    #[error("stream error from the server: {0}")]
    Stream(String),
    #[error("XMPP protocol error: {0}")]
    Protocol(String),
    #[error("timed out: {0}")]
    Timeout(String),
    /// An error IQ in answer to [`C2s::iq`]: the XMPP stanza error condition
    /// (e.g. `item-not-found`), its type (`wait` is temporary, RFC 6120) and
    /// its text, if any.
    #[error("the server answered with an error: {condition}{}", .text.as_deref().map(|t| format!(" ({t})")).unwrap_or_default())]
    Stanza {
        condition: String,
        kind: String,
        text: Option<String>,
    },
    #[error("the connection is closed")]
    Disconnected,
}

impl C2sError {
    /// True for a stanza error of type `wait`: asking again later may work
    /// (see `xmpp::iq::again_while`).
    pub fn is_temporary(&self) -> bool {
        matches!(self, C2sError::Stanza { kind, .. } if kind == "wait")
    }
}

/// A handle on one c2s connection; cheap to clone. The connection closes
/// when [`C2s::close`] is called or when every handle is dropped.
#[derive(Clone)]
pub struct C2s {
    inner: Arc<Inner>,
}

struct Inner {
    jid: FullJid,
    cmd: mpsc::UnboundedSender<Cmd>,
    /// Waiting `iq()` calls by id; `None` once the connection has ended.
    pending: Pending,
    /// Its sender lives as long as the connection task.
    done: watch::Receiver<()>,
}

impl std::fmt::Debug for C2s {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("C2s").field("jid", &self.inner.jid).finish()
    }
}

enum Cmd {
    Stanza(Element),
    Raw(Vec<u8>, oneshot::Sender<Result<(), C2sError>>),
    Close,
}

/// Waiting `iq()` calls by id; `None` once the connection has ended.
type Io = Box<dyn AsyncReadAndWrite + Send>;
type RawBuf = Arc<Mutex<Vec<u8>>>;
type Early = Vec<Element>;

type Pending = Arc<Mutex<Option<HashMap<String, oneshot::Sender<Element>>>>>;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn fresh_id(prefix: &str) -> String {
    format!("{prefix}{}", NEXT_ID.fetch_add(1, Ordering::Relaxed))
}

/// Logs in as `opts.jid` and returns the connection and its incoming stanzas.
pub async fn connect(opts: &C2sOptions) -> Result<(C2s, mpsc::Receiver<Element>), C2sError> {
    let server = opts
        .server
        .clone()
        .unwrap_or_else(|| format!("{}:5222", opts.jid.domain()));
    let (jid, stream, raw, early) =
        match tokio::time::timeout(LOGIN_TIMEOUT, login(opts, &server)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(C2sError::Timeout(format!(
                    "login of {} at {server} took longer than {LOGIN_TIMEOUT:?}",
                    opts.jid.to_bare()
                )))
            }
        };
    tracing::debug!(%jid, %server, "c2s session bound");

    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (out_tx, out_rx) = mpsc::channel(RECEIVER_CAPACITY);
    let (done_tx, done_rx) = watch::channel(());
    let pending = Arc::new(Mutex::new(Some(HashMap::new())));
    let conn = Connection {
        stream,
        raw,
        jid: jid.clone(),
        out: out_tx,
        overflow: early.into(),
        pending: pending.clone(),
        _done: done_tx,
    };
    tokio::spawn(conn.run(cmd_rx));
    let c2s = C2s {
        inner: Arc::new(Inner {
            jid,
            cmd: cmd_tx,
            pending,
            done: done_rx,
        }),
    };
    Ok((c2s, out_rx))
}

/// [`connect`] with plaintext allowed: `jid` (with or without a resource) at
/// `server`, from the local address `bind_ip`.
pub async fn connect_as(
    jid: &str,
    password: &str,
    server: SocketAddr,
    bind_ip: IpAddr,
) -> Result<(C2s, mpsc::Receiver<Element>), C2sError> {
    let jid = Jid::new(jid).map_err(|e| C2sError::InvalidJid(jid.to_string(), e.to_string()))?;
    connect(&C2sOptions {
        jid,
        password: password.to_string(),
        server: Some(server.to_string()),
        bind_ip: Some(bind_ip),
        allow_plaintext: true,
    })
    .await
}

impl C2s {
    /// The bound full JID.
    pub fn jid(&self) -> &FullJid {
        &self.inner.jid
    }

    /// Queues a stanza for sending (in order). Fails only when the
    /// connection has ended.
    pub fn send(&self, el: Element) -> Result<(), C2sError> {
        self.inner
            .cmd
            .send(Cmd::Stanza(el))
            .map_err(|_| C2sError::Disconnected)
    }

    /// Writes `xml` to the socket as it is, after every stanza queued before
    /// it: for hostile-input tests. Returns once it has been written.
    pub async fn send_raw(&self, xml: &str) -> Result<(), C2sError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .cmd
            .send(Cmd::Raw(xml.as_bytes().to_vec(), tx))
            .map_err(|_| C2sError::Disconnected)?;
        rx.await.unwrap_or(Err(C2sError::Disconnected))
    }

    /// Sends an IQ (get/set) and waits for its answer: the result IQ, or
    /// [`C2sError::Stanza`] for an error IQ. Sets a fresh id if it has none.
    pub async fn iq(&self, mut el: Element, timeout: Duration) -> Result<Element, C2sError> {
        let id = match el.attr("id") {
            Some(id) if !id.is_empty() => id.to_string(),
            _ => {
                let id = fresh_id("c2s-iq-");
                el.set_attr(Namespace::NONE, ncname("id"), id.as_str());
                id
            }
        };
        let (tx, rx) = oneshot::channel();
        match lock(&self.inner.pending).as_mut() {
            Some(map) => {
                map.insert(id.clone(), tx);
            }
            None => return Err(C2sError::Disconnected),
        }
        if let Err(e) = self.send(el) {
            self.forget(&id);
            return Err(e);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) if answer.attr("type") == Some("error") => Err(stanza_error(&answer)),
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(C2sError::Disconnected),
            Err(_) => {
                self.forget(&id);
                Err(C2sError::Timeout(format!(
                    "no answer to IQ {id} of {} within {timeout:?}",
                    self.inner.jid
                )))
            }
        }
    }

    /// Closes the stream cleanly (the server then sends our unavailable
    /// presence to others) and waits, bounded, for the socket to close.
    pub async fn close(self) {
        let _ = self.inner.cmd.send(Cmd::Close);
        let mut done = self.inner.done.clone();
        // `changed` fails once the connection task has ended.
        let _ = tokio::time::timeout(CLOSE_TIMEOUT * 2, async {
            while done.changed().await.is_ok() {}
        })
        .await;
    }

    /// True once the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.inner.cmd.is_closed()
    }

    fn forget(&self, id: &str) {
        if let Some(map) = lock(&self.inner.pending).as_mut() {
            map.remove(id);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn ncname(s: &'static str) -> NcName {
    #[allow(clippy::expect_used)]
    NcName::try_from(s).expect("a valid XML name literal")
}

/// The condition, type and text of an error stanza.
fn stanza_error(el: &Element) -> C2sError {
    let e = crate::wire::StanzaError::from_stanza(el);
    C2sError::Stanza {
        condition: e.condition,
        kind: e.kind,
        text: e.text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port nobody listens on (bound, then closed).
    fn closed_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("local address").port()
    }

    #[tokio::test]
    async fn a_refused_address_is_named_once() {
        let server = format!("127.0.0.1:{}", closed_port());
        let Err(err) = connect_tcp(&server, None).await else {
            panic!("connected to a closed port");
        };
        assert_eq!(
            err.to_string(),
            format!("cannot connect to {server}: Connection refused (os error 111)")
        );
    }

    #[tokio::test]
    async fn a_refused_name_says_what_it_resolved_to() {
        let port = closed_port();
        let server = format!("localhost:{port}");
        let Err(err) = connect_tcp(&server, Some(IpAddr::from([127, 0, 0, 1]))).await else {
            panic!("connected to a closed port");
        };
        assert_eq!(
            err.to_string(),
            format!(
                "cannot connect to {server}: 127.0.0.1:{port}: Connection refused (os error 111)"
            )
        );
    }
}
