//! IQ request/response matching by id (tokio-xmpp offers none for
//! components): a map of pending ids to oneshot senders.

use crate::wire::StanzaError;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use xmpp_parsers::minidom::Element;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum IqError {
    #[error("{0}")]
    Stanza(StanzaError),
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("connection lost before the answer")]
    Disconnected,
    /// Not sent: the server drops privileged requests its XEP-0356 grant
    /// does not name (README, "XEP-0356 on ejabberd 24.10 and later").
    #[error(
        "not sent: the server's XEP-0356 grant has no `{kind}` IQ permission for {namespace} \
         (add it under mod_privilege's `iq` option)"
    )]
    NotGranted { namespace: String, kind: String },
}

impl IqError {
    /// The stanza error condition, if the server answered with one.
    pub fn condition(&self) -> Option<&str> {
        match self {
            IqError::Stanza(e) => Some(e.condition.as_str()),
            _ => None,
        }
    }

    /// True for a stanza error of type `wait` (RFC 6120: temporary).
    pub fn is_temporary(&self) -> bool {
        matches!(self, IqError::Stanza(e) if e.kind == "wait")
    }
}

/// Outstanding IQs of one connection (or of several: ids are unique).
#[derive(Clone, Default)]
pub struct Pending {
    inner: Arc<Mutex<HashMap<String, oneshot::Sender<Element>>>>,
    next: Arc<AtomicU64>,
}

impl Pending {
    /// A fresh id and the receiver its answer will arrive on.
    pub fn register(&self) -> (String, oneshot::Receiver<Element>) {
        let id = format!("pp{}", self.next.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = oneshot::channel();
        self.lock().insert(id.clone(), tx);
        (id, rx)
    }

    /// Forgets an id whose waiter gave up.
    pub fn cancel(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Hands a result/error IQ to its waiter. Returns the stanza back when
    /// nobody waits for it (not an answer of ours).
    pub fn complete(&self, stanza: Element) -> Option<Element> {
        if stanza.name() != "iq" {
            return Some(stanza);
        }
        if !matches!(stanza.attr("type"), Some("result") | Some("error")) {
            return Some(stanza);
        }
        let Some(id) = stanza.attr("id") else {
            return Some(stanza);
        };
        let waiter = self.lock().remove(id);
        match waiter {
            Some(tx) => {
                let _ = tx.send(stanza);
                None
            }
            None => Some(stanza),
        }
    }

    /// Fails every outstanding request (connection gone).
    pub fn fail_all(&self) {
        self.lock().clear();
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Element>>> {
        // A poisoned map only means a waiter panicked; the map itself is fine.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Turns a received IQ answer into the result payload or the stanza error.
pub fn into_result(iq: Element) -> Result<Element, IqError> {
    if iq.attr("type") == Some("error") {
        Err(IqError::Stanza(StanzaError::from_stanza(&iq)))
    } else {
        Ok(iq)
    }
}

/// Asks again, [`OWNER_ATTEMPTS`] times in all with [`OWNER_PAUSE`]
/// between, while the answer is a temporary (`wait`, RFC 6120) stanza
/// error; any other outcome is returned as it is.
///
/// For the node-owner requests (create, configure, set members): ejabberd
/// before 25.10 answers "Database failure" (internal-server-error, wait) to
/// one whose Mnesia transaction meets another pubsub transaction at the same
/// moment, or the locks of the one just before it on another cluster node,
/// instead of running it again as Mnesia would (its `mod_pubsub` catches the
/// abort Mnesia restarts with). Nothing was done, so asking again is safe.
pub async fn again_on_wait<T, F, Fut>(ask: F) -> Result<T, IqError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, IqError>>,
{
    again_while(IqError::is_temporary, ask).await
}

/// How often a node-owner request is asked in all on a temporary error, and
/// the pause between: the same for the publisher, doctor and the lab's
/// floors. 200 ms is long enough for the transaction it met to be over, and
/// short enough not to show in a start-up.
pub const OWNER_ATTEMPTS: u32 = 3;
pub const OWNER_PAUSE: Duration = Duration::from_millis(200);

/// [`again_on_wait`] for any error type: asks again while `temporary` says
/// the error is (the c2s connection's `C2sError::is_temporary`, say).
pub async fn again_while<T, E, F, Fut>(temporary: impl Fn(&E) -> bool, mut ask: F) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 1;
    loop {
        match ask().await {
            Err(e) if temporary(&e) && attempt < OWNER_ATTEMPTS => {
                tracing::info!("the server answered a temporary error ({e}); asking again");
                attempt += 1;
                tokio::time::sleep(OWNER_PAUSE).await;
            }
            outcome => return outcome,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(kind: &str) -> IqError {
        IqError::Stanza(StanzaError {
            condition: "internal-server-error".into(),
            kind: kind.into(),
            text: Some("Database failure".into()),
            app: None,
        })
    }

    /// Answers `errors` in turn, then `Ok(n)` with the number of the ask;
    /// also how long it all took on tokio's clock.
    async fn asks(errors: &[&str]) -> (Result<usize, IqError>, usize, Duration) {
        let t0 = tokio::time::Instant::now();
        let mut n = 0;
        let outcome = again_on_wait(|| {
            n += 1;
            let r = match errors.get(n - 1) {
                Some(kind) => Err(error(kind)),
                None => Ok(n),
            };
            std::future::ready(r)
        })
        .await;
        (outcome, n, t0.elapsed())
    }

    // The paused clock: the pauses are skipped through, and measured exactly.
    #[tokio::test(start_paused = true)]
    async fn a_wait_error_is_asked_again_up_to_the_attempts() {
        let p = OWNER_PAUSE;
        assert_eq!(asks(&[]).await, (Ok(1), 1, Duration::ZERO));
        assert_eq!(asks(&["wait", "wait"]).await, (Ok(3), 3, 2 * p));
        assert_eq!(
            asks(&["wait", "wait", "wait"]).await,
            (Err(error("wait")), 3, 2 * p),
            "the third wait is the answer"
        );
        assert_eq!(
            asks(&["cancel"]).await,
            (Err(error("cancel")), 1, Duration::ZERO),
            "only wait is temporary"
        );
        assert_eq!(asks(&["wait", "auth"]).await, (Err(error("auth")), 2, p));
    }

    #[tokio::test]
    async fn matches_by_id_and_passes_others_on() {
        let p = Pending::default();
        let (id, rx) = p.register();
        let other: Element = "<iq xmlns='jabber:component:accept' type='result' id='zzz'/>"
            .parse()
            .unwrap();
        assert!(p.complete(other).is_some());
        let get: Element = format!("<iq xmlns='jabber:component:accept' type='get' id='{id}'/>")
            .parse()
            .unwrap();
        assert!(
            p.complete(get).is_some(),
            "a request with our id is not an answer"
        );
        let ans: Element = format!("<iq xmlns='jabber:component:accept' type='error' id='{id}'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>")
            .parse()
            .unwrap();
        assert!(p.complete(ans).is_none());
        let got = into_result(rx.await.unwrap());
        assert_eq!(got.unwrap_err().condition(), Some("item-not-found"));
        assert!(p.is_empty());
    }
}
