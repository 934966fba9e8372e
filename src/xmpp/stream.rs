//! The component's XEP-0114 stream.
//!
//! Built on tokio-xmpp's low-level `xmlstream` with `minidom::Element` as
//! the item type, NOT on `tokio_xmpp::Component`: that one ends the stream on
//! any stanza xmpp-parsers refuses and on the soft read timeout
//! (seen with tokio-xmpp 6), so any user could knock the component off the server
//! with one bad `<show/>`. Here a stanza is anything well-formed: what it
//! means is decided per stanza above this layer, and silence is answered with
//! a ping to the server, never a reconnect.

use super::iq::{into_result, IqError, Pending};
use super::quickack::QuickAck;
use crate::wire::privilege::{self, Permissions};
use crate::wire::{self, ns};
use futures::{SinkExt, StreamExt};
use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::io::BufStream;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_xmpp::xmlstream::{initiate_stream, ReadError, StreamHeader, Timeouts, XmlStream};
use xmpp_parsers::minidom::Element;

type Stream = XmlStream<BufStream<QuickAck>, Element>;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to {addr}: {err}")]
    Io { addr: String, err: std::io::Error },
    #[error("the server refused the component secret for {jid} (not-authorized): check the component's secret on both sides")]
    Auth { jid: String },
    #[error("another connection is already logged in as {jid} (conflict)")]
    Conflict { jid: String },
    #[error("the server closed the stream: {0}")]
    Stream(String),
    #[error("no answer from {addr} within {timeout:?} during the handshake")]
    Timeout { addr: String, timeout: Duration },
}

impl ConnectError {
    /// Errors that retrying will not fix.
    pub fn is_fatal(&self) -> bool {
        matches!(self, ConnectError::Auth { .. })
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disconnect {
    /// We closed it.
    Closed,
    /// The server sent a stream error (its condition).
    StreamError(String),
    /// The server closed the stream or the socket.
    Eof,
    /// An I/O error or hard timeout.
    Io(String),
    /// The server stopped answering our privileged IQs: it dropped the
    /// XEP-0356 grant of this connection (we closed it, to get a new one).
    GrantLost,
    /// The server closed the connection (or it failed) while an answer
    /// holding a whole node or every session was awaited: the reason, and
    /// what is then the likely cause (`paging::CUT_MID_ANSWER`).
    MidWholeAnswer(String),
}

impl std::fmt::Display for Disconnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Disconnect::Closed => write!(f, "closed by us"),
            Disconnect::StreamError(c) => write!(f, "stream error from the server: {c}"),
            Disconnect::Eof => write!(f, "the server closed the connection"),
            Disconnect::Io(e) => write!(f, "{e}"),
            Disconnect::GrantLost => write!(
                f,
                "the server stopped answering privileged IQs within {GRANT_CHECK_EVERY:?}: \
                 it dropped this connection's XEP-0356 grant (ejabberd 24.10 and later do \
                 when another connection of the same component JID closes)"
            ),
            Disconnect::MidWholeAnswer(reason) => write!(
                f,
                "{reason}, while waiting for an answer holding a whole node or every session: \
                 {}",
                super::paging::CUT_MID_ANSWER
            ),
        }
    }
}

/// How often a connection that sends privileged IQs checks that its grant
/// still holds (one small request; an unanswered one ends the connection).
/// ejabberd keeps a grant per component JID and drops it, silently, when
/// any connection of that JID closes (README, "Running two instances").
pub const GRANT_CHECK_EVERY: Duration = Duration::from_secs(10);

enum Out {
    Stanza(Element),
    Close(oneshot::Sender<()>),
}

/// How requests leave: plain, or as XEP-0356 privileged IQs on behalf of a
/// user of the server (`wire::privilege` says why). Shared by the clones of
/// a connection and by its connection task (whose keepalive must not be
/// dropped either).
#[derive(Clone, Default)]
pub struct Wrapping(Arc<RwLock<Option<Arc<Wrap>>>>);

#[derive(Debug, Clone)]
struct Wrap {
    user: String,
    permissions: Permissions,
}

impl Wrapping {
    /// From now on, requests to bare JIDs and domains go as privileged IQs
    /// on behalf of `user`, within what `permissions` grant.
    pub fn enable(&self, user: &str, permissions: Permissions) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(Wrap {
            user: user.to_string(),
            permissions,
        }));
    }

    /// The user requests are sent on behalf of, when wrapping.
    pub fn user(&self) -> Option<String> {
        self.get().map(|w| w.user.clone())
    }

    /// Read on every request: a reference count, not a copy of the grant.
    fn get(&self) -> Option<Arc<Wrap>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// What the connections to the nodes of one cluster share (README, "An
/// ejabberd cluster"): an answer may come back on any of them, requests leave
/// in one form, and a permission message on any of them speaks for the
/// component.
#[derive(Clone, Default)]
pub struct Shared {
    pending: Pending,
    wrapping: Wrapping,
    presence_granted: Arc<AtomicBool>,
}

/// A handle on one live component connection. Cheap to clone.
#[derive(Clone)]
pub struct Connection {
    jid: String,
    out: mpsc::UnboundedSender<Out>,
    iq_timeout: Duration,
    shared: Shared,
    /// How many `iq_whole` answers are awaited: a connection that ends
    /// meanwhile says what may have ended it (`Disconnect::MidWholeAnswer`).
    whole: Arc<AtomicUsize>,
}

/// Counts one awaited whole answer for as long as it lives.
struct Awaiting(Arc<AtomicUsize>);

impl Awaiting {
    fn new(count: &Arc<AtomicUsize>) -> Awaiting {
        count.fetch_add(1, Ordering::AcqRel);
        Awaiting(count.clone())
    }
}

impl Drop for Awaiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Connection {
    /// The component's JID.
    pub fn jid(&self) -> &str {
        &self.jid
    }

    /// Queues a stanza. Fails only when the connection is gone.
    pub fn send(&self, stanza: Element) -> Result<(), IqError> {
        self.out
            .send(Out::Stanza(stanza))
            .map_err(|_| IqError::Disconnected)
    }

    /// An IQ whose answer holds the whole of something that grows with the
    /// server (every session, every item of active): waited for
    /// `paging::answer_wait`, not `iq_timeout`.
    pub async fn iq_whole(
        &self,
        kind: &str,
        to: &str,
        payload: Element,
    ) -> Result<Element, IqError> {
        let wait = super::paging::answer_wait(self.iq_timeout);
        let _awaiting = Awaiting::new(&self.whole);
        self.iq_with_timeout(kind, to, payload, wait).await
    }

    /// Sends an IQ of `kind` to `to` with `payload` and waits for its answer.
    pub async fn iq(&self, kind: &str, to: &str, payload: Element) -> Result<Element, IqError> {
        self.iq_with_timeout(kind, to, payload, self.iq_timeout)
            .await
    }

    pub async fn iq_with_timeout(
        &self,
        kind: &str,
        to: &str,
        payload: Element,
        timeout: Duration,
    ) -> Result<Element, IqError> {
        let wrap = self
            .shared
            .wrapping
            .get()
            .filter(|_| privilege::needs_wrapping(to));
        if let Some(w) = &wrap {
            // The server drops what its grant does not name: say so now
            // rather than wait for an answer that never comes.
            let allowed = w
                .permissions
                .grant(payload.ns().as_str())
                .is_some_and(|g| g.allows(kind));
            if !allowed {
                return Err(IqError::NotGranted {
                    namespace: payload.ns(),
                    kind: kind.to_string(),
                });
            }
        }
        let (id, rx) = self.shared.pending.register();
        let stanza = match &wrap {
            Some(w) => privilege::wrap(kind, &self.jid, &w.user, to, &id, payload),
            None => wire::iq(kind, &self.jid, to, &id, Some(payload)),
        };
        if self.send(stanza).is_err() {
            self.shared.pending.cancel(&id);
            return Err(IqError::Disconnected);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) if wrap.is_some() => into_result(privilege::unwrap(answer)),
            Ok(Ok(answer)) => into_result(answer),
            Ok(Err(_)) => Err(IqError::Disconnected),
            Err(_) => {
                self.shared.pending.cancel(&id);
                Err(IqError::Timeout(timeout))
            }
        }
    }

    /// Sends the stream footer and waits (bounded) until it is written.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.out.send(Out::Close(tx)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(3), rx).await;
        }
    }

    pub fn is_closed(&self) -> bool {
        self.out.is_closed()
    }

    /// What a cluster's other connections share with this one.
    pub fn shared(&self) -> Shared {
        self.shared.clone()
    }

    /// How requests leave (plain unless [`Wrapping::enable`]d).
    pub fn wrapping(&self) -> &Wrapping {
        &self.shared.wrapping
    }

    /// Whether the server's last XEP-0356 permission message (on this
    /// connection or a cluster's other one) granted presence permission. Noted by the connection task
    /// as it reads, before it hands on anything that came after the
    /// message: a caller woken by a later answer sees it.
    pub fn presence_granted(&self) -> bool {
        self.shared.presence_granted.load(Ordering::Acquire)
    }
}

/// A receive-only connection to one more node of a cluster (README, "An
/// ejabberd cluster"): it brings that node's presences, and IQ answers to the
/// shared `Pending`. Dropping it closes the stream without waiting.
pub struct Secondary {
    out: mpsc::UnboundedSender<Out>,
    pub inbound: mpsc::UnboundedReceiver<Element>,
    pub task: tokio::task::JoinHandle<Disconnect>,
}

impl Secondary {
    /// Ends the stream as [`Connection::close`] does (our footer, then the
    /// server's, bounded) and waits for the connection task.
    pub async fn close(self) -> Disconnect {
        let Secondary { out, inbound, task } = self;
        // With nothing left to write, the task closes the stream.
        drop(out);
        drop(inbound);
        task.await.unwrap_or_else(|e| Disconnect::Io(e.to_string()))
    }
}

/// Connects to one more node as the same component.
pub async fn connect_secondary(
    addr: &str,
    jid: &str,
    secret: &str,
    shared: Shared,
) -> Result<Secondary, ConnectError> {
    let stream = handshake(addr, jid, secret).await?;
    // Requests leave by the first connection only: nothing whole is
    // awaited here.
    let (out_tx, in_rx, task) = spawn_task(stream, jid, shared, Arc::default());
    Ok(Secondary {
        out: out_tx,
        inbound: in_rx,
        task,
    })
}

/// Connects to a XEP-0114 listener at `addr`, authenticates as `jid`, and
/// starts the connection task. Returns the handle, the stream of incoming
/// stanzas (IQ answers to our requests excluded) and the task, whose result
/// says why the connection ended.
pub async fn connect_component(
    addr: &str,
    jid: &str,
    secret: &str,
    iq_timeout: Duration,
) -> Result<
    (
        Connection,
        mpsc::UnboundedReceiver<Element>,
        tokio::task::JoinHandle<Disconnect>,
    ),
    ConnectError,
> {
    let stream = handshake(addr, jid, secret).await?;
    let shared = Shared::default();
    let whole = Arc::new(AtomicUsize::new(0));
    let (out, in_rx, task) = spawn_task(stream, jid, shared.clone(), whole.clone());
    let conn = Connection {
        jid: jid.to_string(),
        out,
        iq_timeout,
        shared,
        whole,
    };
    Ok((conn, in_rx, task))
}

/// Starts the connection task of a stream past its handshake: the sender of
/// what to write, the receiver of what arrives, and the task.
fn spawn_task(
    stream: Stream,
    jid: &str,
    shared: Shared,
    whole: Arc<AtomicUsize>,
) -> (
    mpsc::UnboundedSender<Out>,
    mpsc::UnboundedReceiver<Element>,
    tokio::task::JoinHandle<Disconnect>,
) {
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    let jid = jid.to_string();
    let task = tokio::spawn(run(stream, out_rx, in_tx, jid, shared, whole));
    (out_tx, in_rx, task)
}

/// The server closed the socket without its stream footer (Prosody 13 does
/// when a connection's unsent data pass its send-buffer cap): the XML
/// parser reports an end of input where the stream must go on.
fn ended_mid_stream(e: &std::io::Error) -> bool {
    use xmpp_parsers::minidom::rxml;
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rxml::Error>())
        .is_some_and(|e| matches!(e, rxml::Error::InvalidEof(_)))
}

/// A connection the server ended while `awaited` whole answers were
/// pending says what is then the likely cause; one we closed, or ended by a
/// stream error (which names its own cause), keeps its reason.
fn mid_whole_answer(reason: Disconnect, awaited: usize) -> Disconnect {
    match reason {
        Disconnect::Eof | Disconnect::Io(_) if awaited > 0 => {
            Disconnect::MidWholeAnswer(reason.to_string())
        }
        other => other,
    }
}

/// How long the connection and the server's stream header may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the answer to the handshake may take. Longer than the rest: a
/// server that grants XEP-0356 presence permission may send every session's
/// presence before the answer leaves it (Prosody's mod_privilege: 18 s of
/// its CPU at 10,000 sessions on Prosody 13.0.1, docs/benchmarks.md), and a
/// component that gave up would make it start over at the next attempt.
/// Under the stream's own limit on silence (`read_timeout` plus
/// `response_timeout`, 80 s).
const HANDSHAKE_ANSWER_WAIT: Duration = Duration::from_secs(75);

/// After this long without the handshake's answer, one line says so.
const HANDSHAKE_SLOW: Duration = Duration::from_secs(10);

/// TCP, stream header, XEP-0114 handshake.
async fn handshake(addr: &str, jid: &str, secret: &str) -> Result<Stream, ConnectError> {
    let io_err = |err| ConnectError::Io {
        addr: addr.to_string(),
        err,
    };
    let mut stream = tokio::time::timeout(CONNECT_TIMEOUT, async {
        let tcp = QuickAck::new(TcpStream::connect(addr).await.map_err(io_err)?);
        let timeouts = Timeouts {
            read_timeout: Duration::from_secs(60),
            response_timeout: Duration::from_secs(20),
        };
        let mut pending = initiate_stream(
            BufStream::new(tcp),
            ns::COMPONENT_ACCEPT,
            StreamHeader {
                from: None,
                to: Some(Cow::Borrowed(jid)),
                id: None,
            },
            timeouts,
        )
        .await
        .map_err(io_err)?;
        let header = pending.take_header();
        let id = header
            .id
            .ok_or_else(|| ConnectError::Stream("no stream id in the server's header".into()))?;
        let mut stream: Stream = pending.skip_features();
        let hs = xmpp_parsers::component::Handshake::from_stream_id_and_password(
            id.into_owned(),
            secret,
        );
        stream.send(&hs).await.map_err(io_err)?;
        Ok::<_, ConnectError>(stream)
    })
    .await
    .map_err(|_| ConnectError::Timeout {
        addr: addr.to_string(),
        timeout: CONNECT_TIMEOUT,
    })??;
    let slow = tokio::time::sleep(HANDSHAKE_SLOW);
    tokio::pin!(slow);
    let mut said_slow = false;
    let answer = tokio::time::timeout(HANDSHAKE_ANSWER_WAIT, async {
        loop {
            let item = tokio::select! {
                item = stream.next() => item,
                _ = &mut slow, if !said_slow => {
                    said_slow = true;
                    tracing::warn!(
                        "no answer to the handshake from {addr} after {HANDSHAKE_SLOW:?}: still \
                         waiting (up to {HANDSHAKE_ANSWER_WAIT:?}); a server that sends every \
                         session's presence with its XEP-0356 permission answers late"
                    );
                    continue;
                }
            };
            match item {
                Some(Ok(el)) if el.name() == "handshake" => return Ok(()),
                Some(Ok(el)) if el.name() == "error" && el.ns() == ns::STREAMS => {
                    let cond = stream_error_condition(&el);
                    return Err(match cond.as_str() {
                        "not-authorized" => ConnectError::Auth {
                            jid: jid.to_string(),
                        },
                        "conflict" => ConnectError::Conflict {
                            jid: jid.to_string(),
                        },
                        _ => ConnectError::Stream(cond),
                    });
                }
                Some(Ok(el)) => {
                    tracing::debug!(name = el.name(), "ignoring element before handshake");
                }
                Some(Err(ReadError::SoftTimeout)) | Some(Err(ReadError::ParseError(_))) => {}
                Some(Err(ReadError::HardError(e))) => return Err(io_err(e)),
                Some(Err(ReadError::StreamFooterReceived)) | None => {
                    // Some servers close without a stream error on a bad secret.
                    return Err(ConnectError::Stream(
                        "closed during the handshake".to_string(),
                    ));
                }
            }
        }
    })
    .await
    .map_err(|_| ConnectError::Timeout {
        addr: addr.to_string(),
        timeout: HANDSHAKE_ANSWER_WAIT,
    })?;
    answer.map(|()| stream)
}

fn stream_error_condition(el: &Element) -> String {
    el.children()
        .find(|c| c.ns() == ns::XMPP_STREAMS && c.name() != "text")
        .map(|c| c.name().to_string())
        .unwrap_or_else(|| "undefined-condition".to_string())
}

/// The connection task: writes what is queued, reads what arrives, hands IQ
/// answers to their waiters and everything else to `inbound`.
async fn run(
    mut stream: Stream,
    mut out: mpsc::UnboundedReceiver<Out>,
    inbound: mpsc::UnboundedSender<Element>,
    jid: String,
    shared: Shared,
    whole: Arc<AtomicUsize>,
) -> Disconnect {
    let Shared {
        pending,
        wrapping,
        presence_granted,
    } = shared;
    let mut keepalive = 0u64;
    let mut grant_check = tokio::time::interval_at(
        tokio::time::Instant::now() + GRANT_CHECK_EVERY,
        GRANT_CHECK_EVERY,
    );
    grant_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut grant_answer: Option<(String, oneshot::Receiver<Element>)> = None;
    let reason = loop {
        tokio::select! {
            _ = grant_check.tick() => {
                let Some(w) = wrapping.get() else { continue };
                if let Some((id, mut rx)) = grant_answer.take() {
                    if let Err(oneshot::error::TryRecvError::Empty) = rx.try_recv() {
                        pending.cancel(&id);
                        close(&mut stream).await;
                        break Disconnect::GrantLost;
                    }
                }
                // Any answer will do, an error too: a server that dropped
                // the grant drops the request instead (`Wrapping`). Asked
                // of the user's server itself, which always answers (a
                // user's own bare JID got no answer from ejabberd 24.12).
                let (id, rx) = pending.register();
                let server = w.user.split_once('@').map_or(w.user.as_str(), |(_, d)| d);
                let check = privilege::wrap(
                    "get",
                    &jid,
                    &w.user,
                    server,
                    &id,
                    Element::builder("query", ns::DISCO_ITEMS).build(),
                );
                if let Err(e) = stream.send(&check).await {
                    break Disconnect::Io(format!("write failed: {e}"));
                }
                grant_answer = Some((id, rx));
            }
            msg = out.recv() => {
                let Some(msg) = msg else { break close(&mut stream).await };
                match write_batch(&mut stream, msg, &mut out).await {
                    Ok(None) => {}
                    Ok(Some(done)) => {
                        let r = close(&mut stream).await;
                        let _ = done.send(());
                        break r;
                    }
                    Err(e) => break Disconnect::Io(format!("write failed: {e}")),
                }
            }
            item = stream.next() => match item {
                Some(Ok(el)) => {
                    if el.name() == "error" && el.ns() == ns::STREAMS {
                        break Disconnect::StreamError(stream_error_condition(&el));
                    }
                    if let Some(p) = Permissions::parse(&el) {
                        presence_granted.store(p.presence.is_some(), Ordering::Release);
                    }
                    if let Some(el) = pending.complete(el) {
                        if inbound.send(el).is_err() {
                            break close(&mut stream).await;
                        }
                    }
                }
                Some(Err(ReadError::ParseError(e))) => {
                    tracing::warn!("skipped an unreadable stanza: {e}");
                }
                Some(Err(ReadError::SoftTimeout)) => {
                    // Silence is normal on a quiet server: make the server
                    // say something before the hard timeout, never reconnect.
                    keepalive += 1;
                    let domain = jid.split_once('.').map(|(_, d)| d).unwrap_or(&jid);
                    // When the server drops plain IQs to its domain (see
                    // `Wrapping`), a full JID of it still gets an answer
                    // (an error: any answer keeps the stream alive).
                    let to = match wrapping.user() {
                        Some(_) => Cow::Owned(format!("{domain}/keepalive")),
                        None => Cow::Borrowed(domain),
                    };
                    let ping = wire::iq(
                        "get",
                        &jid,
                        &to,
                        &format!("keepalive{keepalive}"),
                        Some(Element::builder("ping", ns::PING).build()),
                    );
                    if let Err(e) = stream.send(&ping).await {
                        break Disconnect::Io(format!("keepalive failed: {e}"));
                    }
                    tracing::debug!("quiet stream: sent keepalive ping");
                }
                Some(Err(ReadError::HardError(e))) if ended_mid_stream(&e) => break Disconnect::Eof,
                Some(Err(ReadError::HardError(e))) => break Disconnect::Io(e.to_string()),
                Some(Err(ReadError::StreamFooterReceived)) | None => break Disconnect::Eof,
            }
        }
    };
    // Read before the waiters are failed, which ends their count.
    let reason = mid_whole_answer(reason, whole.load(Ordering::Acquire));
    pending.fail_all();
    reason
}

/// Writes `first` and whatever else is already queued, then flushes once.
async fn write_batch(
    stream: &mut Stream,
    first: Out,
    out: &mut mpsc::UnboundedReceiver<Out>,
) -> std::io::Result<Option<oneshot::Sender<()>>> {
    let mut next = Some(first);
    let mut n = 0;
    while let Some(msg) = next.take() {
        match msg {
            Out::Stanza(el) => stream.feed(&el).await?,
            Out::Close(done) => {
                <Stream as SinkExt<&Element>>::flush(stream).await?;
                return Ok(Some(done));
            }
        }
        n += 1;
        if n < 256 {
            next = out.try_recv().ok();
        }
    }
    <Stream as SinkExt<&Element>>::flush(stream).await?;
    Ok(None)
}

/// Sends the stream footer, then waits (bounded) for the server's. ejabberd
/// runs a component's disconnect hooks, which drop its XEP-0356 grant,
/// before it sends its footer: a connection opened after that keeps the
/// grant it gets.
async fn close(stream: &mut Stream) -> Disconnect {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        if <Stream as SinkExt<&Element>>::close(stream).await.is_err() {
            return;
        }
        loop {
            match stream.next().await {
                Some(Ok(_)) | Some(Err(ReadError::SoftTimeout | ReadError::ParseError(_))) => {}
                Some(Err(ReadError::StreamFooterReceived | ReadError::HardError(_))) | None => {
                    return
                }
            }
        }
    })
    .await;
    Disconnect::Closed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_ended_by_the_server_during_a_whole_answer_names_the_send_buffer() {
        let cut = mid_whole_answer(Disconnect::Eof, 1);
        assert_eq!(
            cut,
            Disconnect::MidWholeAnswer("the server closed the connection".into())
        );
        let line = cut.to_string();
        assert!(
            line.starts_with(
                "the server closed the connection, while waiting for an answer holding a whole \
                 node or every session: if the server is Prosody 13"
            ),
            "{line}"
        );
        assert!(
            line.contains("network_settings = { max_send_buffer_size = 128*1024*1024 }"),
            "{line}"
        );
        let io = mid_whole_answer(Disconnect::Io("connection reset".into()), 2);
        assert_eq!(io, Disconnect::MidWholeAnswer("connection reset".into()));
    }

    #[test]
    fn an_end_of_input_inside_the_stream_is_the_server_closing_it() {
        use xmpp_parsers::minidom::rxml;
        let eof = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rxml::Error::InvalidEof(None),
        );
        assert!(ended_mid_stream(&eof));
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(!ended_mid_stream(&reset));
    }

    #[test]
    fn other_ends_keep_their_reason() {
        assert_eq!(mid_whole_answer(Disconnect::Eof, 0), Disconnect::Eof);
        for own in [
            Disconnect::Closed,
            Disconnect::StreamError("system-shutdown".into()),
            Disconnect::GrantLost,
        ] {
            assert_eq!(mid_whole_answer(own.clone(), 1), own);
        }
    }

    #[test]
    fn a_whole_answer_is_counted_while_it_is_awaited() {
        let count = Arc::new(AtomicUsize::new(0));
        {
            let _a = Awaiting::new(&count);
            let _b = Awaiting::new(&count);
            assert_eq!(count.load(Ordering::Acquire), 2);
        }
        assert_eq!(count.load(Ordering::Acquire), 0);
    }
}
