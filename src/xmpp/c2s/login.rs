//! Logging in: TCP from the chosen source address, the stream header and
//! features, STARTTLS or plaintext, SASL, resource binding.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use crate::xmpp::quickack::QuickAck;
use futures::{SinkExt, StreamExt};
use sasl::common::{ChannelBinding, Credentials};
use tokio::io::{AsyncRead, AsyncWrite, BufStream, ReadBuf};
use tokio::net::TcpSocket;
use tokio_xmpp::error::{AuthError, Error as XmppError};
use tokio_xmpp::xmlstream::{
    initiate_stream, ReadError, RecvFeaturesError, StreamHeader, Timeouts, XmlStream, XmppStream,
};
use xmpp_parsers::bind::BindQuery;
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::FullJid;
use xmpp_parsers::minidom::Element;
use xmpp_parsers::ns;
use xmpp_parsers::stream_features::StreamFeatures;

use super::*;

pub(super) async fn login(
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

pub(super) async fn connect_tcp(
    server: &str,
    bind_ip: Option<IpAddr>,
) -> Result<QuickAck, C2sError> {
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

pub(super) fn is_stream_error(el: &Element) -> bool {
    el.name() == "error" && el.ns() == ns::STREAM
}

pub(super) fn stream_error_text(el: &Element) -> String {
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
