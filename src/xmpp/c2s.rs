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

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use crate::xmpp::quickack::QuickAck;
use futures::{SinkExt, StreamExt};
use sasl::common::{ChannelBinding, Credentials};
use tokio::io::{AsyncRead, AsyncWrite, BufStream, ReadBuf};
use tokio::net::TcpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_xmpp::connect::AsyncReadAndWrite;
use tokio_xmpp::error::{AuthError, Error as XmppError};
use tokio_xmpp::xmlstream::{
    initiate_stream, ReadError, RecvFeaturesError, StreamHeader, Timeouts, XmlStream, XmppStream,
};
use xmpp_parsers::bind::BindQuery;
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::{FullJid, Jid};
use xmpp_parsers::minidom::rxml::{Namespace, NcName};
use xmpp_parsers::minidom::{Element, Node};
use xmpp_parsers::ns;
use xmpp_parsers::ping::Ping;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};
use xmpp_parsers::stream_features::StreamFeatures;

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
    /// (e.g. `item-not-found`) and its text, if any.
    #[error("the server answered with an error: {condition}{}", .text.as_deref().map(|t| format!(" ({t})")).unwrap_or_default())]
    Stanza {
        condition: String,
        text: Option<String>,
    },
    #[error("the connection is closed")]
    Disconnected,
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

/// The condition and text of an error stanza.
fn stanza_error(el: &Element) -> C2sError {
    let error = el.children().find(|c| c.name() == "error");
    let mut condition = None;
    let mut text = None;
    for c in error.iter().flat_map(|e| e.children()) {
        if c.ns() != ns::XMPP_STANZAS {
            continue;
        }
        if c.name() == "text" {
            text = Some(c.text());
        } else if condition.is_none() {
            condition = Some(c.name().to_string());
        }
    }
    C2sError::Stanza {
        condition: condition.unwrap_or_else(|| "undefined-condition".into()),
        text,
    }
}

// ---------------------------------------------------------------------------
// Login

type Io = Box<dyn AsyncReadAndWrite + Send>;
type RawBuf = Arc<Mutex<Vec<u8>>>;
type Early = Vec<Element>;

async fn login(
    opts: &C2sOptions,
    server: &str,
) -> Result<(FullJid, XmlStream<Io, Element>, RawBuf, Early), C2sError> {
    let bare = opts.jid.to_bare();
    let Some(node) = opts.jid.node() else {
        return Err(C2sError::InvalidJid(
            opts.jid.to_string(),
            "a client JID needs a local part (user@domain)".into(),
        ));
    };
    let domain = opts.jid.domain().as_str().to_string();
    let (features, stream, raw, channel_binding) = open_stream(opts, server, &domain).await?;

    // SASL (SCRAM-SHA-256, SCRAM-SHA-1, PLAIN: whichever the server offers
    // first in that order). ANONYMOUS is never acceptable here.
    let mechanisms: BTreeSet<String> = features
        .sasl_mechanisms
        .into_iter()
        .filter(|m| m != "ANONYMOUS")
        .collect();
    let creds = Credentials::default()
        .with_username(node.as_str())
        .with_password(opts.password.clone())
        .with_channel_binding(channel_binding);
    let stream = tokio_xmpp::client_login(stream, mechanisms, creds)
        .await
        .map_err(|e| match e {
            XmppError::Auth(AuthError::Fail(condition)) => C2sError::Auth(format!(
                "authentication failed for {bare}: {}",
                kebab(&format!("{condition:?}"))
            )),
            XmppError::Auth(AuthError::NoMechanism) => C2sError::Auth(format!(
                "authentication failed for {bare}: the server offers no SASL mechanism we support"
            )),
            XmppError::Auth(e) => C2sError::Auth(format!("authentication failed for {bare}: {e}")),
            XmppError::Disconnected => C2sError::Auth(format!(
                "authentication failed for {bare}: the server closed the connection"
            )),
            e => C2sError::Protocol(format!("during authentication of {bare}: {e}")),
        })?;

    // The stream restarts after SASL; from here on stanzas are read as plain
    // elements so that no content can make the parser end the stream.
    let pending = stream
        .send_header(header(&domain))
        .await
        .map_err(|e| io_error(server, e))?;
    let (features, mut stream) = pending
        .recv_features::<Element>()
        .await
        .map_err(|e| features_error(server, e))?;
    if !features.can_bind() {
        return Err(C2sError::Bind(format!(
            "{server} offers no resource binding after authentication"
        )));
    }

    let resource = opts.jid.resource().map(|r| r.as_str().to_string());
    let bind_id = fresh_id("c2s-bind-");
    let request = client_ns(Iq::from_set(bind_id.clone(), BindQuery::new(resource)).into());
    stream
        .send(&request)
        .await
        .map_err(|e| io_error(server, e))?;
    let mut early = Vec::new();
    loop {
        match stream.next().await {
            Some(Ok(el)) if el.name() == "iq" && el.attr("id") == Some(bind_id.as_str()) => {
                if el.attr("type") != Some("result") {
                    return Err(C2sError::Bind(stanza_error(&el).to_string()));
                }
                let jid = el
                    .get_child("bind", ns::BIND)
                    .and_then(|b| b.get_child("jid", ns::BIND))
                    .map(|j| j.text())
                    .ok_or_else(|| C2sError::Bind("the bind result carries no JID".into()))?;
                let jid = FullJid::new(jid.trim())
                    .map_err(|e| C2sError::Bind(format!("the server bound {jid:?}: {e}")))?;
                return Ok((jid, stream, raw, early));
            }
            Some(Ok(el)) if is_stream_error(&el) => {
                return Err(C2sError::Stream(stream_error_text(&el)))
            }
            Some(Ok(el)) => early.push(el),
            Some(Err(ReadError::ParseError(e))) => {
                tracing::warn!(%bare, "skipped an unreadable element during bind: {e}")
            }
            Some(Err(ReadError::SoftTimeout)) => {}
            Some(Err(ReadError::HardError(e))) => return Err(io_error(server, e)),
            Some(Err(ReadError::StreamFooterReceived)) | None => {
                return Err(C2sError::Bind(format!(
                    "{server} closed the stream during resource binding"
                )))
            }
        }
    }
}

/// What a `ServerConnector` would do, but returning the features it had to
/// read: TCP from the chosen source address, stream header, features, then
/// STARTTLS when offered (a new stream over TLS) or plain when allowed.
async fn open_stream(
    opts: &C2sOptions,
    server: &str,
    domain: &str,
) -> Result<(StreamFeatures, XmppStream<Io>, RawBuf, ChannelBinding), C2sError> {
    let tcp = connect_tcp(server, opts.bind_ip).await?;
    let plain_raw = RawBuf::default();
    let io = BufStream::new(Inject::new(tcp, plain_raw.clone()));
    let pending = initiate_stream(io, ns::JABBER_CLIENT, header(domain), timeouts())
        .await
        .map_err(|e| io_error(server, e))?;
    let (features, stream): (StreamFeatures, XmppStream<_>) = pending
        .recv_features()
        .await
        .map_err(|e| features_error(server, e))?;

    if features.can_starttls() {
        let (tls, channel_binding) = tokio_xmpp::connect::starttls::starttls(stream, domain)
            .await
            .map_err(|e| C2sError::Tls {
                server: server.to_string(),
                reason: e.to_string(),
            })?;
        let raw = RawBuf::default();
        let io: Io = Box::new(BufStream::new(Inject::new(tls, raw.clone())));
        let pending = initiate_stream(io, ns::JABBER_CLIENT, header(domain), timeouts())
            .await
            .map_err(|e| io_error(server, e))?;
        let (features, stream) = pending
            .recv_features()
            .await
            .map_err(|e| features_error(server, e))?;
        Ok((features, stream, raw, channel_binding))
    } else if opts.allow_plaintext {
        Ok((
            features,
            stream.box_stream(),
            plain_raw,
            ChannelBinding::None,
        ))
    } else {
        Err(C2sError::NoTls {
            server: server.to_string(),
        })
    }
}

async fn connect_tcp(server: &str, bind_ip: Option<IpAddr>) -> Result<QuickAck, C2sError> {
    let fail = |reason: String| C2sError::Connect {
        server: server.to_string(),
        reason,
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(server)
        .await
        .map_err(|e| fail(format!("cannot resolve: {e}")))?
        .filter(|a| bind_ip.map_or(true, |ip| ip.is_ipv4() == a.is_ipv4()))
        .collect();
    let mut last = String::from("no address of the same family as the source address");
    // The address a name resolved to tells something; `server` itself
    // given as an address would be said twice.
    let at = |addr: &SocketAddr| {
        if addr.to_string() == server {
            String::new()
        } else {
            format!("{addr}: ")
        }
    };
    for addr in addrs {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(|e| fail(e.to_string()))?;
        if let Some(ip) = bind_ip {
            socket
                .bind(SocketAddr::new(ip, 0))
                .map_err(|e| fail(format!("cannot bind the source address {ip}: {e}")))?;
        }
        match tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(addr)).await {
            // Acks at once: see `QuickAck` (Prosody's Nagle would hold
            // stanzas back behind our delayed ACKs).
            Ok(Ok(tcp)) => return Ok(QuickAck::new(tcp)),
            Ok(Err(e)) => last = format!("{}{e}", at(&addr)),
            Err(_) => last = format!("{}no answer within {CONNECT_TIMEOUT:?}", at(&addr)),
        }
    }
    Err(fail(last))
}

fn header(domain: &str) -> StreamHeader<'_> {
    StreamHeader {
        to: Some(Cow::Borrowed(domain)),
        from: None,
        id: None,
    }
}

fn timeouts() -> Timeouts {
    Timeouts {
        read_timeout: READ_TIMEOUT,
        response_timeout: RESPONSE_TIMEOUT,
    }
}

fn io_error(server: &str, e: io::Error) -> C2sError {
    C2sError::Connect {
        server: server.to_string(),
        reason: e.to_string(),
    }
}

fn features_error(server: &str, e: RecvFeaturesError) -> C2sError {
    match e {
        RecvFeaturesError::Io(e) => io_error(server, e),
        RecvFeaturesError::StreamError(e) => C2sError::Stream(e.0.to_string()),
    }
}

fn is_stream_error(el: &Element) -> bool {
    el.name() == "error" && el.ns() == ns::STREAM
}

fn stream_error_text(el: &Element) -> String {
    let mut condition = String::from("undefined-condition");
    let mut text = String::new();
    for c in el.children() {
        if c.name() == "text" {
            text = format!(" ({})", c.text());
        } else if c.ns() == "urn:ietf:params:xml:ns:xmpp-streams" {
            condition = c.name().to_string();
        }
    }
    format!("{condition}{text}")
}

/// `NotAuthorized` -> `not-authorized` (the Debug form of a SASL condition).
fn kebab(s: &str) -> String {
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i > 0 {
                out.push('-');
            }
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Raw writes: a transport layer that writes queued raw bytes before anything
// else. `send_raw` queues bytes, then flushes the XML stream (whose own
// buffer is empty between stanzas), which drains them in order.

struct Inject<S> {
    inner: S,
    raw: RawBuf,
}

impl<S> Inject<S> {
    fn new(inner: S, raw: RawBuf) -> Self {
        Inject { inner, raw }
    }
}

impl<S: AsyncWrite + Unpin> Inject<S> {
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut raw = lock(&self.raw);
        while !raw.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &raw))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            raw.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Inject<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Inject<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------------------
// The connection task: one task owns the stream, reads and writes.

struct Connection {
    stream: XmlStream<Io, Element>,
    raw: RawBuf,
    jid: FullJid,
    out: mpsc::Sender<Element>,
    /// Stanzas for the receiver that did not fit in it yet.
    overflow: VecDeque<Element>,
    pending: Pending,
    /// Dropped when the task ends: wakes `close()`.
    _done: watch::Sender<()>,
}

enum Wake<'a> {
    Permit(Option<mpsc::Permit<'a, Element>>),
    Cmd(Option<Cmd>),
    Item(Option<Result<Element, ReadError>>),
}

enum Flow {
    Continue,
    Close,
    End,
}

impl Connection {
    async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
        loop {
            // Wait for something to do (the futures borrow parts of `self`),
            // then do it.
            let out = self.out.clone();
            let wake = tokio::select! {
                biased;
                permit = out.reserve(), if !self.overflow.is_empty() => Wake::Permit(permit.ok()),
                cmd = cmds.recv() => Wake::Cmd(cmd),
                item = self.stream.next() => Wake::Item(item),
            };
            let flow = match wake {
                Wake::Permit(permit) => {
                    match (permit, self.overflow.pop_front()) {
                        (Some(permit), Some(el)) => permit.send(el),
                        _ => self.overflow.clear(), // the receiver is gone
                    }
                    Flow::Continue
                }
                Wake::Cmd(Some(Cmd::Stanza(el))) => self.write(&el).await,
                Wake::Cmd(Some(Cmd::Raw(bytes, reply))) => {
                    lock(&self.raw).extend_from_slice(&bytes);
                    let r = SinkExt::<&Element>::flush(&mut self.stream).await;
                    let flow = self.write_result(r.as_ref().map(|_| ()));
                    let _ = reply.send(r.map_err(|e| C2sError::Connect {
                        server: self.jid.domain().to_string(),
                        reason: e.to_string(),
                    }));
                    flow
                }
                // Close, or every handle dropped.
                Wake::Cmd(Some(Cmd::Close)) | Wake::Cmd(None) => Flow::Close,
                Wake::Item(item) => self.read(item).await,
            };
            match flow {
                Flow::Continue => {}
                Flow::Close => {
                    self.close().await;
                    break;
                }
                Flow::End => break,
            }
        }
        // Fail every waiting iq() and refuse new ones, refuse new commands,
        // and only then end the receiver (by dropping `self.out`): whoever
        // sees the receiver end sees a closed handle.
        lock(&self.pending).take();
        drop(cmds);
        tracing::debug!(jid = %self.jid, "c2s connection ended");
        drop(self);
    }

    async fn write(&mut self, el: &Element) -> Flow {
        let el = client_ns(el.clone());
        let r = self.stream.send(&el).await;
        self.write_result(r.as_ref().map(|_| ()))
    }

    fn write_result(&self, r: Result<(), &io::Error>) -> Flow {
        match r {
            Ok(()) => Flow::Continue,
            Err(e) => {
                tracing::warn!(jid = %self.jid, "c2s write failed, connection lost: {e}");
                Flow::End
            }
        }
    }

    async fn read(&mut self, item: Option<Result<Element, ReadError>>) -> Flow {
        match item {
            Some(Ok(el)) => self.incoming(el).await,
            Some(Err(ReadError::ParseError(e))) => {
                tracing::warn!(jid = %self.jid, "skipped an unreadable stanza: {e}");
                Flow::Continue
            }
            Some(Err(ReadError::SoftTimeout)) => {
                let ping: Element = Iq::from_get(fresh_id(KEEPALIVE_PREFIX), Ping)
                    .with_to(Jid::from(self.jid.domain().to_owned()))
                    .into();
                self.write(&ping).await
            }
            Some(Err(ReadError::StreamFooterReceived)) => {
                tracing::debug!(jid = %self.jid, "the server closed the stream");
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.stream.shutdown()).await;
                Flow::End
            }
            Some(Err(ReadError::HardError(e))) => {
                tracing::warn!(jid = %self.jid, "c2s connection lost: {e}");
                Flow::End
            }
            None => Flow::End,
        }
    }

    async fn incoming(&mut self, el: Element) -> Flow {
        let is_iq = el.name() == "iq" && el.ns() == ns::JABBER_CLIENT;
        let kind = el.attr("type").unwrap_or_default().to_string();
        if is_iq && (kind == "result" || kind == "error") {
            let id = el.attr("id").unwrap_or_default();
            if id.starts_with(KEEPALIVE_PREFIX) {
                return Flow::Continue;
            }
            let waiter = lock(&self.pending).as_mut().and_then(|m| m.remove(id));
            if let Some(waiter) = waiter {
                let _ = waiter.send(el);
                return Flow::Continue;
            }
        }
        if is_iq && kind == "get" && el.get_child("ping", ns::PING).is_some() {
            let pong = iq_reply(&el, None);
            return self.write(&pong).await;
        }
        if is_stream_error(&el) {
            tracing::warn!(jid = %self.jid, "stream error from the server: {}", stream_error_text(&el));
            // The footer follows; keep reading until it does.
            return Flow::Continue;
        }
        if self.overflow.is_empty() {
            match self.out.try_send(el) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(el)) => self.overflow.push_back(el),
                Err(mpsc::error::TrySendError::Closed(el)) => {
                    // Nobody reads: an IQ request still deserves an answer.
                    if is_iq && (kind == "get" || kind == "set") {
                        let reply = iq_reply(&el, Some(DefinedCondition::ServiceUnavailable));
                        return self.write(&reply).await;
                    }
                }
            }
        } else {
            self.overflow.push_back(el);
        }
        Flow::Continue
    }

    /// Our footer, then the server's footer and EOF (bounded).
    async fn close(&mut self) {
        if tokio::time::timeout(CLOSE_TIMEOUT, self.stream.shutdown())
            .await
            .is_err()
        {
            return;
        }
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            while let Some(item) = self.stream.next().await {
                match item {
                    Ok(el) => {
                        let _ = self.out.try_send(el);
                    }
                    Err(ReadError::HardError(_)) => break,
                    Err(_) => {}
                }
            }
        })
        .await;
    }
}

/// xmpp-parsers is built with its `component` feature in this crate, so every
/// stanza it serialises (`Iq`, `Presence`, `Message`, `StanzaError`, ...)
/// is in `jabber:component:accept`; on a c2s stream Prosody answers such a
/// stanza with `unsupported-stanza-type` and closes the stream. So every
/// element in that namespace, at any depth, is moved to `jabber:client`.
pub fn client_ns(mut el: Element) -> Element {
    let nodes = el.take_nodes();
    let mut out = if el.ns() == COMPONENT_NS {
        let mut moved = Element::bare(el.name(), ns::JABBER_CLIENT);
        *moved.attrs_mut() = el.attrs().clone();
        moved
    } else {
        el
    };
    for node in nodes {
        match node {
            Node::Element(child) => {
                out.append_child(client_ns(child));
            }
            Node::Text(text) => out.append_text_node(text),
        }
    }
    out
}

const COMPONENT_NS: &str = "jabber:component:accept";

/// An empty result, or an error with `condition`, answering the IQ `req`.
fn iq_reply(req: &Element, condition: Option<DefinedCondition>) -> Element {
    let kind = if condition.is_some() {
        "error"
    } else {
        "result"
    };
    let mut b = Element::builder("iq", ns::JABBER_CLIENT)
        .attr(ncname("type"), kind)
        .attr(ncname("id"), req.attr("id").unwrap_or_default());
    if let Some(to) = req.attr("from") {
        b = b.attr(ncname("to"), to);
    }
    if let Some(c) = condition {
        b = b.append(Element::from(StanzaError::new(
            ErrorType::Cancel,
            c,
            "en",
            "",
        )));
    }
    b.build()
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
