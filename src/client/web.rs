//! The web feed (SPEC §7): what `pubpresence watch` follows, served over
//! HTTP for consumers without XMPP. `GET /` is a self-contained page (its
//! script and style are embedded in the binary and inlined in the page),
//! `GET /events` Server-Sent Events with the JSON lines of SPEC §6, and
//! `GET /state` the current state as one JSON object.
//!
//! Every event is serialised and framed once (`event:`/`data:` lines, as
//! shared `Bytes`: handing it to a consumer is a reference count, not a copy)
//! and handed to the consumers through a bounded `tokio::sync::broadcast`; each consumer has a small pump that
//! moves events into its own bounded queue without ever waiting. A consumer
//! whose queue is full (it stopped reading) is cut off: its connection is
//! closed even while the server is blocked writing to it, so it never slows
//! the others or the XMPP side, and memory stays bounded.

use super::board::Board;
use super::follow::WatchEvent;
use super::watch::{self, Update};
use crate::config::Secret;
use crate::wire::time;
use axum::body::{Body, Bytes};
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::IncomingStream;
use axum::Router;
use futures::task::AtomicWaker;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{broadcast, mpsc};

const PAGE: &str = include_str!("../../assets/index.html");
const SCRIPT: &str = include_str!("../../assets/app.js");
const STYLE: &str = include_str!("../../assets/style.css");

/// Events a consumer may be behind before it is cut off.
pub const DEFAULT_BACKLOG: usize = 256;
/// A comment line at least this often (SPEC §7 asks for 15 s at most).
pub const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// The kernel's send buffer per connection: bounds what a stalled consumer
/// holds besides its queue, and lets a stall show up as one.
const SEND_BUFFER: usize = 64 * 1024;

/// The page's Content-Security-Policy: nothing from any other host.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// The state the feed serves, and its consumers. Cheap to clone.
#[derive(Clone)]
pub struct Feed {
    inner: Arc<Inner>,
}

struct Inner {
    board: Mutex<Board>,
    tx: broadcast::Sender<Bytes>,
    backlog: usize,
    token: Option<Secret>,
    consumers: AtomicUsize,
    cut_off: AtomicUsize,
}

impl Feed {
    /// A feed with the default backlog; `token`, if any, is required of
    /// every request.
    pub fn new(token: Option<Secret>) -> Feed {
        Feed::with_backlog(token, DEFAULT_BACKLOG)
    }

    /// A feed whose consumers are cut off once `backlog` events behind.
    pub fn with_backlog(token: Option<Secret>, backlog: usize) -> Feed {
        let backlog = backlog.max(4);
        let (tx, _) = broadcast::channel(backlog);
        Feed {
            inner: Arc::new(Inner {
                board: Mutex::new(Board::default()),
                tx,
                backlog,
                token,
                consumers: AtomicUsize::new(0),
                cut_off: AtomicUsize::new(0),
            }),
        }
    }

    /// Takes an update of the watch runner: the state changes and every
    /// consumer of `/events` gets the event. Never waits.
    pub fn update(&self, u: &Update) {
        let mut board = self.inner.board.lock().unwrap_or_else(|e| e.into_inner());
        board.update(u);
        if let Update::Event(ev) = u {
            // Sent under the lock: a new consumer's first events and the
            // broadcast after them form one consistent sequence.
            let _ = self.inner.tx.send(sse_event(ev, &time::now()));
        }
    }

    /// Consumers of `/events` connected now.
    pub fn consumers(&self) -> usize {
        self.inner.consumers.load(Ordering::Relaxed)
    }

    /// Consumers cut off so far for falling behind.
    pub fn cut_off(&self) -> usize {
        self.inner.cut_off.load(Ordering::Relaxed)
    }

    /// The `/state` object.
    pub fn state_json(&self) -> serde_json::Value {
        let board = self.inner.board.lock().unwrap_or_else(|e| e.into_inner());
        let users: Vec<serde_json::Value> = if board.synced {
            let snap = WatchEvent::Snapshot(board.users.values().cloned().collect());
            let v = watch::to_json(&snap, &time::now());
            v["users"].as_array().cloned().unwrap_or_default()
        } else {
            Vec::new()
        };
        serde_json::json!({
            "service": board.service.map(|s| s.as_str()),
            "synced": board.synced,
            "users": users,
            "at": time::format(&time::now()),
        })
    }

    /// The routes, for `axum::serve` with [`ConnCut`] connect info (see
    /// [`Feed::serve`]).
    fn router(&self) -> Router {
        Router::new()
            .route("/", get(page))
            .route("/events", get(events))
            .route("/state", get(state))
            .with_state(self.clone())
    }

    /// Binds `addr` and serves the feed in a task of its own; returns the
    /// bound address (`:0` picks a free port).
    pub async fn serve(&self, addr: SocketAddr) -> io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let app = self
            .router()
            .into_make_service_with_connect_info::<ConnCut>();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(CutListener(listener), app).await {
                tracing::error!("web feed on {bound} stopped: {e}");
            }
        });
        Ok(bound)
    }

    fn authorized(&self, headers: &HeaderMap, uri: &Uri) -> bool {
        let Some(token) = &self.inner.token else {
            return true;
        };
        let bearer = headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| {
                let (scheme, rest) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .any(|t| token.matches(t));
        bearer || query_values(uri, "token").iter().any(|t| token.matches(t))
    }
}

/// Passes the runner's updates on unchanged, feeding `feed` on the way
/// (for `pubpresence watch --http`: the table or JSON lines go on as before).
pub fn tee(feed: Feed, mut rx: mpsc::Receiver<Update>) -> mpsc::Receiver<Update> {
    let (tx, out) = mpsc::channel(256);
    tokio::spawn(async move {
        while let Some(u) = rx.recv().await {
            feed.update(&u);
            if tx.send(u).await.is_err() {
                break;
            }
        }
    });
    out
}

/// The SSE message of an event: `event: KIND`, `data: JSON` (SPEC §6).
/// Framed here rather than with axum's `sse::Event`, whose buffer is copied
/// for every consumer it is cloned for (1,000 copies of every change with
/// 1,000 consumers, measured by `pubpresence bench --web-consumers`).
/// Compact JSON holds no line break, so one `data:` line carries it.
fn sse_event(ev: &WatchEvent, at: &time::Timestamp) -> Bytes {
    let json = watch::to_json(ev, at).to_string();
    Bytes::from(format!("event: {}\ndata: {json}\n\n", watch::kind(ev)))
}

/// An SSE comment: keeps proxies from closing a quiet stream (SPEC §7).
const KEEP_ALIVE_FRAME: &[u8] = b":\n\n";

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::WWW_AUTHENTICATE, "Bearer"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        "401 unauthorized: a token is required (Authorization: Bearer TOKEN or ?token=TOKEN)\n",
    )
        .into_response()
}

async fn page(State(feed): State<Feed>, headers: HeaderMap, uri: Uri) -> Response {
    if !feed.authorized(&headers, &uri) {
        return unauthorized();
    }
    let html = PAGE
        .replace("/*STYLE*/", STYLE)
        .replace("/*SCRIPT*/", SCRIPT);
    let mut r = (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

async fn state(State(feed): State<Feed>, headers: HeaderMap, uri: Uri) -> Response {
    if !feed.authorized(&headers, &uri) {
        return unauthorized();
    }
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        feed.state_json().to_string(),
    )
        .into_response()
}

async fn events(
    State(feed): State<Feed>,
    ConnectInfo(cut): ConnectInfo<ConnCut>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if !feed.authorized(&headers, &uri) {
        return unauthorized();
    }
    let inner = &feed.inner;
    let (qtx, qrx) = mpsc::channel::<Bytes>(inner.backlog);
    let mut rx = {
        let board = inner.board.lock().unwrap_or_else(|e| e.into_inner());
        let rx = inner.tx.subscribe();
        let at = time::now();
        if let Some(st) = board.service {
            let _ = qtx.try_send(sse_event(&WatchEvent::Service(st), &at));
        }
        if board.synced {
            let snap = WatchEvent::Snapshot(board.users.values().cloned().collect());
            let _ = qtx.try_send(sse_event(&snap, &at));
        }
        rx
    };
    // The pump: never waits on the consumer.
    let pump_feed = feed.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                r = rx.recv() => match r {
                    Ok(ev) => match qtx.try_send(ev) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            pump_feed.inner.cut_off.fetch_add(1, Ordering::Relaxed);
                            tracing::info!("web feed: a consumer fell {} events behind; cut off", pump_feed.inner.backlog);
                            cut.0.cut();
                            break;
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => break,
                    },
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        pump_feed.inner.cut_off.fetch_add(1, Ordering::Relaxed);
                        cut.0.cut();
                        break;
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = qtx.closed() => break,
            }
        }
    });
    let guard = Consumer::new(feed.clone());
    let stream = futures::stream::unfold((qrx, guard), |(mut q, g)| async move {
        let frame = match tokio::time::timeout(KEEP_ALIVE, q.recv()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return None,
            Err(_) => Bytes::from_static(KEEP_ALIVE_FRAME),
        };
        Some((Ok::<_, Infallible>(frame), (q, g)))
    });
    let mut r = Body::from_stream(stream).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Tells nginx not to buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

/// Counts a consumer of `/events` while its stream lives.
struct Consumer(Feed);

impl Consumer {
    fn new(feed: Feed) -> Consumer {
        feed.inner.consumers.fetch_add(1, Ordering::Relaxed);
        Consumer(feed)
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.0.inner.consumers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The values of `key` in the URI's query string, percent-decoded.
fn query_values(uri: &Uri, key: &str) -> Vec<String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k) == key).then(|| percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    fn hex(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|d| d as u8)
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------
// Cutting a connection off while the server is blocked writing to it

/// A connection's "close now" switch.
#[derive(Default)]
struct Cut {
    cut: AtomicBool,
    waker: AtomicWaker,
}

impl Cut {
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.waker.wake();
    }

    /// Registers the connection's task; an error once cut.
    fn check(&self, cx: &Context<'_>) -> io::Result<()> {
        self.waker.register(cx.waker());
        if self.cut.load(Ordering::SeqCst) {
            Err(io::Error::new(io::ErrorKind::ConnectionAborted, "cut off"))
        } else {
            Ok(())
        }
    }
}

/// The connection's switch, as the handlers see it (axum connect info).
#[derive(Clone)]
struct ConnCut(Arc<Cut>);

impl Connected<IncomingStream<'_, CutListener>> for ConnCut {
    fn connect_info(stream: IncomingStream<'_, CutListener>) -> Self {
        ConnCut(stream.io().cut.clone())
    }
}

struct CutListener(tokio::net::TcpListener);

impl axum::serve::Listener for CutListener {
    type Io = CutIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (CutIo, SocketAddr) {
        loop {
            match self.0.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let _ = socket2::SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER);
                    let io = CutIo {
                        stream,
                        cut: Arc::new(Cut::default()),
                    };
                    return (io, addr);
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait, not spin.
                    tracing::warn!("web feed: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

struct CutIo {
    stream: tokio::net::TcpStream,
    cut: Arc<Cut>,
}

impl AsyncRead for CutIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.cut.check(cx)?;
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CutIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.cut.check(cx)?;
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.cut.check(cx)?;
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.cut.check(cx)?;
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_tokens_are_decoded() {
        let uri: Uri = "/events?a=1&token=a%2Fb%20c+d&x".parse().unwrap();
        assert_eq!(query_values(&uri, "token"), vec!["a/b c d".to_string()]);
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
