//! Addresses of new connections, from user-stats (docs/protocol.md, "Items": learned once per
//! connection), with at most one request per user in flight.
//!
//! user-stats answers with every session of the user. Asking once per new
//! connection costs the server O(n²) for a user with n connections arriving
//! together (a bot with thousands of resources, a reconnect storm): each
//! answer lists them all. Here the connections of one user that wait for an
//! address share requests: one answer serves every waiting connection it
//! lists, and only those it does not list (they connected after it was
//! asked) cause another.

use super::metrics::{ErrorKind, Metrics};
use super::publisher::{self, Publisher};
use crate::xmpp::IqError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// A connection missing from an answer is asked for again after these
/// pauses (a session whose presence just arrived may not be listed yet, seen
/// on an ejabberd cluster right after a node rejoined); then it is published
/// without an address. A session that is simply gone (closed right after its
/// presence) ends the same way; its departure follows.
const RETRY_PAUSES: [Duration; 2] = [Duration::from_millis(300), Duration::from_millis(1000)];

/// user-stats unanswered (IQ timeout) this many times in a row: the waiting
/// connections are published without an address. An address published
/// empty stays empty for the life of the connection, so this is patient
/// (about 5 minutes with the default `iq_timeout`): late but right beats
/// prompt but wrong on a feed that says where people are.
const MAX_TIMEOUTS: u32 = 30;
const TIMEOUT_PAUSE: Duration = Duration::from_secs(1);

/// Connections of one user waiting for their address.
#[derive(Default)]
struct Waiting {
    /// resource -> who waits for it.
    by_resource: HashMap<String, Entry>,
    /// Requests sent so far for this user.
    sent: u64,
}

#[derive(Default)]
struct Entry {
    /// `Waiting::sent` when it joined: answers to later requests count.
    joined: u64,
    /// Answers that should have listed it and did not.
    misses: usize,
    txs: Vec<oneshot::Sender<String>>,
}

/// Shared by a session's tasks; cheap to clone.
#[derive(Clone, Default)]
pub struct IpLookup {
    users: Arc<Mutex<HashMap<String, Waiting>>>,
}

impl IpLookup {
    /// The address of `bare/resource` ("" when user-stats does not say).
    pub async fn ip_of(
        &self,
        publisher: &Publisher,
        domain: &str,
        bare: &str,
        resource: &str,
        m: &Metrics,
    ) -> String {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut users = self.lock();
            let start = !users.contains_key(bare);
            let w = users.entry(bare.to_string()).or_default();
            let sent = w.sent;
            w.by_resource
                .entry(resource.to_string())
                .or_insert_with(|| Entry {
                    joined: sent,
                    ..Entry::default()
                })
                .txs
                .push(tx);
            start
        };
        if start {
            let this = self.clone();
            let (publisher, domain, bare, m) = (
                publisher.clone(),
                domain.to_string(),
                bare.to_string(),
                m.clone(),
            );
            tokio::spawn(async move { this.drive(&publisher, &domain, &bare, &m).await });
        }
        rx.await.unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Waiting>> {
        // A panic elsewhere must not stop address lookups.
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks for `bare`'s sessions until nobody of that user waits.
    async fn drive(&self, publisher: &Publisher, domain: &str, bare: &str, m: &Metrics) {
        let mut timeouts = 0;
        loop {
            // Entries that joined up to now are covered by this request.
            let covers = {
                let mut users = self.lock();
                let Some(w) = users.get_mut(bare) else {
                    return;
                };
                w.sent += 1;
                w.sent
            };
            let answer = publisher::user_stats(&publisher.conn, domain, bare).await;
            let pause = 'answered: {
                let mut users = self.lock();
                let Some(w) = users.get_mut(bare) else {
                    return;
                };
                match answer {
                    // A slow server (seen: Prosody busy broadcasting the
                    // presences of one user's thousand resources to each
                    // other) answers late, not never: ask again, and count
                    // no misses (nobody was found missing).
                    Err(IqError::Timeout(t)) if timeouts < MAX_TIMEOUTS => {
                        timeouts += 1;
                        tracing::debug!(user = %bare, "user-stats: no answer within {t:?}; asking again");
                        break 'answered TIMEOUT_PAUSE;
                    }
                    Ok(sessions) => {
                        timeouts = 0;
                        for s in sessions {
                            if let Some(e) = w.by_resource.remove(&s.resource) {
                                for tx in e.txs {
                                    let _ = tx.send(s.ip.clone());
                                }
                            }
                        }
                    }
                    Err(e) => {
                        m.error(ErrorKind::UserStats);
                        tracing::warn!(
                            user = %bare,
                            "user-stats failed: {e}; publishing without an IP. {}",
                            publisher::admin_hint(&e)
                        );
                        w.by_resource.clear();
                    }
                }
                // The rest was not listed: count it where the request
                // covered it, give up on those asked often enough.
                w.by_resource.retain(|resource, e| {
                    if e.joined >= covers {
                        return true;
                    }
                    e.misses += 1;
                    if e.misses > RETRY_PAUSES.len() {
                        tracing::info!(
                            fulljid = %format!("{bare}/{resource}"),
                            "user-stats does not list this session: publishing it without an address"
                        );
                        false
                    } else {
                        true
                    }
                });
                if w.by_resource.is_empty() {
                    users.remove(bare);
                    return;
                }
                // Someone who came after the request: ask again at once;
                // otherwise give a late session time to show up.
                let least = w.by_resource.values().map(|e| e.misses).min().unwrap_or(0);
                match least.checked_sub(1) {
                    None => Duration::ZERO,
                    Some(i) => RETRY_PAUSES.get(i).copied().unwrap_or_default(),
                }
            };
            tokio::time::sleep(pause).await;
        }
    }
}
