//! The tracker's actions written to the server, in worker tasks
//! (docs/protocol.md, "What the component publishes, and when": active
//! first, then live; one connection's changes strictly in order).

use super::session::{Done, Session};
use crate::component::dispatch::Dispatch;
use crate::component::metrics::{ErrorKind, Metrics, Node};
use crate::component::tracker::Action;
use crate::wire::status::ServiceStatus;
use crate::xmpp::IqError;
use std::time::Instant;

impl Session<'_> {
    /// Runs the tracker's actions in worker tasks, at most `IN_FLIGHT` at
    /// once, in order; results come back through `done_tx`.
    /// Order per connection is the tracker's business: it never has two
    /// actions of one connection in flight.
    pub(super) fn execute(&mut self, actions: Vec<Action>) {
        self.cfg.telemetry.tracked(self.tracker.len());
        // Each of these comes back as a `Done` (`Session::answered`).
        self.in_flight += actions
            .iter()
            .filter(|a| !matches!(a, Action::ReconcileDone))
            .count();
        self.cfg.telemetry.in_flight(self.in_flight);
        for action in actions {
            if let Some(action) = self.dispatch.push(action) {
                self.spawn_worker(action);
            }
        }
    }

    /// A task that runs `action`, then whatever waits in `dispatch`, until
    /// nothing does: a finished action hands over to the next at once.
    fn spawn_worker(&self, action: Action) {
        let m = self.cfg.telemetry.clone();
        let tx = self.done_tx.clone();
        let publisher = self.publisher.clone();
        let domain = self.cfg.domain.clone();
        let instance = self.cfg.instance.clone();
        let privacy = self.cfg.privacy.clone();
        let ips = self.ips.clone();
        let dispatch = self.dispatch.clone();
        let iq_timeout = self.cfg.iq_timeout;
        tokio::spawn(async move {
            let mut next = Some(action);
            while let Some(action) = next {
                let sent = Instant::now();
                let done = match action {
                    Action::FetchIp { fulljid, name } => {
                        let resource = fulljid.split_once('/').map(|(_, r)| r).unwrap_or("");
                        let ip = ips.ip_of(&publisher, &domain, &name, resource, &m).await;
                        Done::Ip {
                            fulljid,
                            ip: privacy.ip(&ip),
                        }
                    }
                    Action::SetActive { item } => {
                        let t = m.start();
                        let r = publisher.set_active(&item).await;
                        m.publish_done(Node::Active, t, r.is_ok());
                        log_write_error("publishing on active", &item.fulljid, &r, &dispatch);
                        Done::Written {
                            fulljid: item.fulljid,
                            ok: applied(&r),
                            node_gone: node_gone(&r).then(|| publisher.nodes.active.clone()),
                        }
                    }
                    Action::RetractActive { fulljid } => {
                        let r = publisher.retract_active(&fulljid).await;
                        count_retract(&m, &r);
                        log_write_error("retracting from active", &fulljid, &r, &dispatch);
                        Done::Written {
                            fulljid,
                            ok: applied(&r),
                            node_gone: None,
                        }
                    }
                    Action::PublishLive { item } if privacy.hidden(&item.name) => {
                        // The retraction of an earlier run's item: a hidden
                        // user never appears on live, not even going away.
                        Done::Written {
                            fulljid: item.fulljid,
                            ok: true,
                            node_gone: None,
                        }
                    }
                    Action::PublishLive { item } => {
                        let t = m.start();
                        let r = publisher.publish_live(&item).await;
                        m.publish_done(Node::Live, t, r.is_ok());
                        log_write_error("publishing on live", &item.fulljid, &r, &dispatch);
                        Done::Written {
                            fulljid: item.fulljid,
                            ok: applied(&r),
                            node_gone: node_gone(&r).then(|| publisher.nodes.live.clone()),
                        }
                    }
                    Action::ReconcileDone => {
                        let r = publisher
                            .publish_status(ServiceStatus::Online, instance.as_deref())
                            .await;
                        m.publish_done(Node::Status, None, r.is_ok());
                        Done::Status(ServiceStatus::Online, r)
                    }
                };
                let now = Instant::now();
                dispatch.answered(now.duration_since(sent), iq_timeout, now);
                let _ = tx.send(done);
                next = dispatch.next();
            }
        });
    }
}

/// Counts a retraction from active, or its failure.
pub(super) fn count_retract(m: &Metrics, r: &Result<(), IqError>) {
    match r {
        Ok(()) => m.retracted(),
        Err(_) => m.error(ErrorKind::Retract),
    }
}

/// Whether to go on as if a write was applied. A timeout says nothing: an
/// overloaded server usually applies the write late (seen in the benchmark
/// at 10,000 logins), and dropping the change would lose its live event
/// while active has it; if it really was lost, the next audit repairs active.
fn applied(r: &Result<(), IqError>) -> bool {
    matches!(r, Ok(()) | Err(IqError::Timeout(_)))
}

/// A publish answered `item-not-found`: the node itself is gone.
fn node_gone(r: &Result<(), IqError>) -> bool {
    matches!(r, Err(e) if e.condition() == Some("item-not-found"))
}

fn log_write_error(what: &str, fulljid: &str, r: &Result<(), IqError>, dispatch: &Dispatch) {
    let Err(e) = r else { return };
    let text = e.to_string();
    if text.contains("quota")
        || matches!(
            e.condition(),
            Some("resource-constraint") | Some("policy-violation")
        )
    {
        tracing::error!(
            "{what} {fulljid} refused: {e}. Active cannot hold every connection: raise \
             `pubsub_max_items` and `storage_archive_item_limit` on Prosody's pubsub component \
             (ejabberd: `max_items_node`)"
        );
    } else if let IqError::Timeout(_) = e {
        // See `applied`: late, most likely not lost; an audit would catch it.
        // One line per `UNANSWERED_EVERY`, the others counted into it.
        if let Some(more) = dispatch.unanswered(Instant::now()) {
            let also = if more > 0 {
                format!(" ({more} more since the last such line, taken as done too)")
            } else {
                String::new()
            };
            tracing::warn!("{what} {fulljid}: {e} (the server is busy); taking it as done{also}");
        }
    } else {
        tracing::error!("{what} {fulljid} failed: {e}");
    }
}
