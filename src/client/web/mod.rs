//! The web feed (docs/protocol.md, "Web feed"): what `pubpresence watch` follows, served over
//! HTTP for consumers without XMPP. `GET /` is a self-contained page (its
//! script and style are embedded in the binary and inlined in the page),
//! `GET /events` Server-Sent Events with the JSON lines of docs/protocol.md, "JSON events", and
//! `GET /state` the current state as one JSON object.
//!
//! Every event is serialised and framed once (`event:`/`data:` lines, as
//! shared `Bytes`: handing it to a consumer is a reference count, not a copy)
//! and handed to the consumers through one bounded `tokio::sync::broadcast`,
//! whose ring is the only backlog there is. Each consumer's response body
//! reads the ring directly (no task or queue of its own: with 1,000
//! consumers, a pump task and a queue each doubled the wake-ups per event and
//! the memory per consumer). The feed counts what it sent; each consumer
//! records what it took. One that falls `backlog` events behind (it stopped
//! reading) is cut off: its connection is closed even while the server is
//! blocked writing to it, so it never slows the others or the XMPP side, and
//! memory stays bounded.

mod cut;
pub mod resume;

use super::board::Board;
use super::follow::WatchEvent;
use super::watch::{self, Update};
use crate::config::Secret;
use crate::wire::time;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use bytes::BytesMut;
use cut::{accept, ConnCut, Cut};
use futures::StreamExt;
use hyper::body::Incoming;
use resume::{Ask, Epoch, Reset, Ring, Start};
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tower::ServiceExt;

const PAGE: &str = include_str!("../../../assets/index.html");
const SCRIPT: &str = include_str!("../../../assets/app.js");
const STYLE: &str = include_str!("../../../assets/style.css");

/// Events a consumer may be behind before it is cut off.
pub const DEFAULT_BACKLOG: usize = 256;
/// A comment line at least this often (docs/protocol.md, "/events": 15 s at most).
pub const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// hyper's smallest allowed read buffer, and the most a request head may
/// take here (ours are a few hundred bytes). hyper's default lets the read
/// buffer of every connection grow to 16 KiB; this keeps it at 8 KiB, which
/// is most of the memory a consumer of `/events` costs (measured with
/// `pubpresence-lab bench --web-consumers`).
const MAX_REQUEST: usize = 8 * 1024;

/// The page's Content-Security-Policy: nothing from any other host.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// How long an event may wait for others to go out with it, per consumer
/// connected. Events closer together than the linger leave in one write per
/// consumer: at 700 changes/s to 1,000 consumers, one write and one wake-up
/// per event were 700,000 a second on each side, and their CPU, not the
/// feed's logic, was the latency (`pubpresence-lab bench --web-consumers`). A
/// write to one consumer costs the feed about 3 µs (perf), so waiting 10 µs
/// per consumer caps the fan-out near a third of a core whatever the rate,
/// while a few consumers get every event at once. An event after a quiet
/// moment always leaves at once.
const LINGER_PER_CONSUMER: Duration = Duration::from_micros(10);
/// The longest linger (reached at 1,000 consumers). Measured with 1,000
/// consumers at 1,000 changes/s: 5 ms gave a p99 of 52.7 ms to the last
/// consumer, 10 ms 30.8 ms and 20 ms 38.5 ms, the feed using 48, 34 and 27 %
/// of a core (docs/benchmarks.md).
const LINGER_MAX: Duration = Duration::from_millis(10);
/// A batch leaves at once when it holds this much.
const MAX_BATCH: usize = 16 * 1024;

/// A write for every consumer: SSE frames, and how many events they carry.
type Batch = (Bytes, u64);

/// What `update` and a new consumer must see in one consistent order.
struct Shared {
    board: Board,
    /// Events broadcast so far.
    sent: u64,
    /// Broadcasts so far (the lag check runs every `LAG_CHECK_EVERY`).
    batches: u64,
    last_sent: Instant,
    /// Frames waiting for the batch to leave, and their events.
    pending: BytesMut,
    pending_events: u64,
    /// Wakes the task that sends a waiting batch (none until `serve`:
    /// without consumers nothing waits).
    flusher: Option<Arc<tokio::sync::Notify>>,
    /// The consumers of `/events`, for the lag check.
    consumers: Vec<Weak<Slot>>,
    /// The last `snapshot` frame, its second and its `reset`, until the
    /// board changes: consumers connecting together (a wall of screens
    /// after a restart) share one frame instead of each building its own
    /// copy of the state.
    snapshot: Option<(time::Timestamp, Reset, Bytes)>,
    /// The frames of the last events, for consumers that resume.
    ring: Ring,
}

impl Shared {
    fn snapshot_frame(&mut self, epoch: Epoch, at: &time::Timestamp, reset: Reset) -> Bytes {
        if let Some((t, r, frame)) = &self.snapshot {
            if t == at && *r == reset {
                return frame.clone();
            }
        }
        let frame = sse_event(
            epoch,
            self.board.seq,
            &self.board.snapshot(),
            at,
            Some(reset),
        );
        self.snapshot = Some((*at, reset, frame.clone()));
        frame
    }
}

/// One consumer of `/events`, as the lag check sees it.
struct Slot {
    /// Events it has taken from the ring (counted like `Shared::sent`).
    taken: AtomicU64,
    cut: Arc<Cut>,
}

/// Check the consumers' lag every this many broadcasts: a consumer is cut
/// off at most this many batches after it is `backlog` events behind.
const LAG_CHECK_EVERY: u64 = 16;

/// The state the feed serves, and its consumers. Cheap to clone.
#[derive(Clone)]
pub struct Feed {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Mutex<Shared>,
    /// This feed's epoch: a new one each time `watch` starts.
    epoch: Epoch,
    tx: broadcast::Sender<Batch>,
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
        Feed::with_limits(token, backlog, crate::config::DEFAULT_RESUME_WINDOW)
    }

    /// The same, keeping the last `window` events for consumers that
    /// resume (`[watch] http_resume_window`; 0: none).
    pub fn with_limits(token: Option<Secret>, backlog: usize, window: usize) -> Feed {
        let backlog = backlog.max(4);
        let (tx, _) = broadcast::channel(backlog);
        Feed {
            inner: Arc::new(Inner {
                shared: Mutex::new(Shared {
                    board: Board::default(),
                    sent: 0,
                    batches: 0,
                    last_sent: Instant::now(),
                    pending: BytesMut::new(),
                    pending_events: 0,
                    flusher: None,
                    consumers: Vec::new(),
                    snapshot: None,
                    ring: Ring::new(window),
                }),
                epoch: Epoch::new(),
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
        let mut sh = self.inner.lock();
        sh.board.update(u);
        sh.snapshot = None;
        if let Update::Event { seq, event } = u {
            // Kept and sent under the lock: a new consumer's first frames,
            // whether a snapshot or the events it missed, and the broadcast
            // after them form one consistent sequence.
            let frame = sse_event(self.inner.epoch, *seq, event, &time::now(), None);
            sh.ring.push(*seq, frame.clone());
            self.push(&mut sh, frame);
        }
    }

    /// This feed's epoch (`/state`'s `epoch`, the first part of every id).
    pub fn epoch(&self) -> String {
        self.inner.epoch.to_string()
    }

    /// Sends an event's frame now, or adds it to the waiting batch.
    fn push(&self, sh: &mut Shared, frame: Bytes) {
        let Some(flusher) = sh.flusher.clone() else {
            return self.broadcast(sh, frame, 1);
        };
        if sh.pending.is_empty() && sh.last_sent.elapsed() >= self.linger() {
            return self.broadcast(sh, frame, 1);
        }
        sh.pending.extend_from_slice(&frame);
        sh.pending_events += 1;
        if sh.pending.len() >= MAX_BATCH {
            self.flush(sh);
        } else if sh.pending_events == 1 {
            flusher.notify_one();
        }
    }

    /// How long an event may wait for others now (`LINGER_PER_CONSUMER`).
    fn linger(&self) -> Duration {
        let n = self.inner.consumers.load(Ordering::Relaxed);
        LINGER_PER_CONSUMER
            .saturating_mul(u32::try_from(n).unwrap_or(u32::MAX))
            .min(LINGER_MAX)
    }

    /// Sends the waiting batch, if any.
    fn flush(&self, sh: &mut Shared) {
        if sh.pending_events > 0 {
            let batch = sh.pending.split().freeze();
            let n = std::mem::take(&mut sh.pending_events);
            self.broadcast(sh, batch, n);
        }
    }

    /// The feed's one timer task, while the feed lives: sends each waiting
    /// batch a linger after the previous write (woken by `push`), and a
    /// comment frame whenever nothing went out for half the keep-alive
    /// period, so every consumer sees a frame at least every `KEEP_ALIVE`
    /// (one timer for the feed, not one per consumer).
    async fn timers(inner: Weak<Inner>, wake: Arc<tokio::sync::Notify>) {
        let mut tick = tokio::time::interval(KEEP_ALIVE / 2);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let batch_waits = tokio::select! {
                _ = wake.notified() => true,
                _ = tick.tick() => false,
            };
            let Some(inner) = inner.upgrade() else {
                return;
            };
            let feed = Feed { inner };
            if batch_waits {
                let at = feed.inner.lock().last_sent + feed.linger();
                tokio::time::sleep_until(at).await;
            }
            let mut sh = feed.inner.lock();
            if batch_waits {
                feed.flush(&mut sh);
            } else if sh.last_sent.elapsed() >= KEEP_ALIVE / 2 {
                feed.flush(&mut sh);
                feed.broadcast(&mut sh, Bytes::from_static(KEEP_ALIVE_FRAME), 0);
            }
        }
    }

    fn broadcast(&self, sh: &mut Shared, frames: Bytes, events: u64) {
        let _ = self.inner.tx.send((frames, events));
        sh.sent += events;
        sh.batches += 1;
        sh.last_sent = Instant::now();
        if sh.batches % LAG_CHECK_EVERY == 0 {
            let (sent, backlog) = (sh.sent, self.inner.backlog as u64);
            sh.consumers.retain(|w| {
                let Some(slot) = w.upgrade() else {
                    return false;
                };
                if sent.saturating_sub(slot.taken.load(Ordering::Relaxed)) < backlog {
                    return true;
                }
                self.cut_off_slot(&slot);
                false
            });
        }
    }

    /// Cuts a consumer off for falling behind (counted once).
    fn cut_off_slot(&self, slot: &Slot) {
        if slot.cut.cut() {
            self.inner.cut_off.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                "web feed: a consumer fell {} events behind; cut off",
                self.inner.backlog
            );
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
        let sh = self.inner.lock();
        let board = &sh.board;
        // The snapshot event's array itself, not a copy of it (this runs
        // under the feed's lock).
        let users = match board.synced {
            true => watch::to_json(&board.snapshot(), &time::now())["users"].take(),
            false => serde_json::Value::Null,
        };
        let users = if users.is_array() {
            users
        } else {
            serde_json::json!([])
        };
        serde_json::json!({
            "service": board.service.map(|s| s.as_str()),
            "synced": board.synced,
            "users": users,
            "at": time::format(&time::now()),
            "epoch": self.inner.epoch.to_string(),
            "seq": board.seq,
        })
    }

    /// The routes; every request carries its connection's [`ConnCut`]
    /// (see [`Feed::serve`]).
    fn router(&self) -> Router {
        Router::new()
            .route("/", get(page))
            .route("/events", get(events))
            .route("/state", get(state))
            .with_state(self.clone())
    }

    /// Binds `addr` and serves the feed in a task of its own; returns the
    /// bound address (`:0` picks a free port).
    ///
    /// Served with hyper's HTTP/1 connection builder rather than
    /// `axum::serve`, which offers no way to set the read buffer
    /// ([`MAX_REQUEST`]); the routes are still axum's.
    pub async fn serve(&self, addr: SocketAddr) -> io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let router = self.router();
        let wake = Arc::new(tokio::sync::Notify::new());
        self.inner.lock().flusher = Some(wake.clone());
        tokio::spawn(Feed::timers(Arc::downgrade(&self.inner), wake));
        tokio::spawn(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            http.max_buf_size(MAX_REQUEST)
                .timer(hyper_util::rt::TokioTimer::new());
            loop {
                let io = accept(&listener).await;
                let cut = ConnCut(io.cut.clone());
                let svc = router
                    .clone()
                    .map_request(move |mut req: Request<Incoming>| {
                        req.extensions_mut().insert(cut.clone());
                        req.map(Body::new)
                    });
                let conn = http.serve_connection(
                    hyper_util::rt::TokioIo::new(io),
                    hyper_util::service::TowerToHyperService::new(svc),
                );
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!("web feed: connection ended: {e}");
                    }
                });
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

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
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

/// The SSE message of an event: `event: KIND`, `data: JSON` (docs/protocol.md, "JSON events").
/// Framed here rather than with axum's `sse::Event`, whose buffer is copied
/// for every consumer it is cloned for (1,000 copies of every change with
/// 1,000 consumers, measured by `pubpresence-lab bench --web-consumers`).
/// Compact JSON holds no line break, so one `data:` line carries it.
/// The `id` is `EPOCH-SEQ`: the state after event `seq` (docs/protocol.md,
/// "Resuming a stream"); `reset` marks the first messages of a stream that
/// starts with the whole state.
fn sse_event(
    epoch: Epoch,
    seq: u64,
    ev: &WatchEvent,
    at: &time::Timestamp,
    reset: Option<Reset>,
) -> Bytes {
    let mut json = watch::event_json(seq, ev, at);
    if let Some(r) = reset {
        json["reset"] = r.as_str().into();
    }
    Bytes::from(format!(
        "id: {}\nevent: {}\ndata: {json}\n\n",
        epoch.id(seq),
        watch::kind(ev)
    ))
}

/// An SSE comment: keeps proxies from closing a quiet stream (docs/protocol.md, "/events").
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
    Extension(cut): Extension<ConnCut>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if !feed.authorized(&headers, &uri) {
        return unauthorized();
    }
    let header = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let one = |key: &str| query_values(&uri, key).into_iter().next();
    let ask = Ask::from_request(
        header,
        one("last_event_id").as_deref(),
        one("after").as_deref(),
        one("epoch").as_deref(),
    );
    let slot = Arc::new(Slot {
        taken: AtomicU64::new(0),
        cut: cut.0,
    });
    let epoch = feed.inner.epoch;
    let mut first = Vec::with_capacity(2);
    let rx = {
        let mut sh = feed.inner.lock();
        // What waits is already on the board and in the ring, hence in the
        // snapshot or the replay: it leaves before this consumer joins.
        feed.flush(&mut sh);
        let rx = feed.inner.tx.subscribe();
        slot.taken.store(sh.sent, Ordering::Relaxed);
        sh.consumers.push(Arc::downgrade(&slot));
        match sh.ring.start(&ask, epoch, sh.board.seq) {
            // Shared frames only, under the lock; joined below.
            Start::Resume(missed) => first = missed,
            Start::Reset(reset) => {
                let at = time::now();
                if let Some(st) = sh.board.service {
                    let service = WatchEvent::Service(st);
                    first.push(sse_event(epoch, sh.board.seq, &service, &at, Some(reset)));
                }
                if sh.board.synced {
                    first.push(sh.snapshot_frame(epoch, &at, reset));
                }
            }
        }
        rx
    };
    // One write for what it missed, not one per event (with 1,000 consumers
    // back at once, a write per event and consumer was half the feed's CPU:
    // `pubpresence-lab bench --web-resume`); joined outside the feed's lock.
    if first.len() > 2 {
        let mut all = BytesMut::with_capacity(first.iter().map(Bytes::len).sum());
        for frame in &first {
            all.extend_from_slice(frame);
        }
        first = vec![all.freeze()];
    }
    let follow = Follow {
        rx,
        slot,
        feed: feed.clone(),
        _consumer: Consumer::new(feed),
    };
    let rest = futures::stream::unfold(follow, |mut f| async move {
        let frame = f.next().await?;
        Some((Ok::<_, Infallible>(frame), f))
    });
    let stream = futures::stream::iter(first.into_iter().map(Ok)).chain(rest);
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

/// A consumer's place in the ring.
struct Follow {
    rx: broadcast::Receiver<Batch>,
    slot: Arc<Slot>,
    feed: Feed,
    _consumer: Consumer,
}

impl Follow {
    /// The next frame; `None` once the feed is gone or this consumer missed
    /// frames (it is cut off then: a gap would leave its state wrong).
    async fn next(&mut self) -> Option<Bytes> {
        match self.rx.recv().await {
            Ok((frames, events)) => {
                self.slot.taken.fetch_add(events, Ordering::Relaxed);
                Some(frames)
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                self.feed.cut_off_slot(&self.slot);
                None
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linger_grows_with_the_consumers_up_to_its_cap() {
        let feed = Feed::new(None);
        let at = |n: usize| {
            feed.inner.consumers.store(n, Ordering::Relaxed);
            feed.linger()
        };
        assert_eq!(at(0), Duration::ZERO);
        assert_eq!(at(1), Duration::from_micros(10));
        assert_eq!(at(100), Duration::from_millis(1));
        assert_eq!(at(1000), Duration::from_millis(10));
        assert_eq!(at(50_000), LINGER_MAX);
        assert_eq!(at(usize::MAX), LINGER_MAX);
    }

    #[test]
    fn query_tokens_are_decoded() {
        let uri: Uri = "/events?a=1&token=a%2Fb%20c+d&x".parse().unwrap();
        assert_eq!(query_values(&uri, "token"), vec!["a/b c d".to_string()]);
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
