//! The benchmarks' Prosody (`start_prosody`: the lab's, with the accounts
//! registered; for `prosody`, `web`, `doctor` and the soak) and the plain
//! clients the Prosody bench runs on it: logins, subscriptions, a look at
//! active.

use super::client::{client_iq, ACTIVE, IQ_TIMEOUT};
use super::error::{setup, BenchError};
use crate::{LabError, Prosody, ProsodyOptions};
use pubpresence::jid::Jid;
use pubpresence::minidom::Element;
use pubpresence::wire::{ns, pubsub};
use pubpresence::xmpp::c2s::{self, C2s, C2sOptions};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Logs `user` (password = name) in as `resource` and sends its presence.
pub(super) async fn login(
    prosody: &Prosody,
    user: &str,
    resource: &str,
) -> Result<(C2s, mpsc::Receiver<Element>), BenchError> {
    let jid = format!("{user}@{}/{resource}", prosody.domain);
    let opts = C2sOptions {
        jid: Jid::new(&jid).map_err(setup)?,
        password: user.to_string(),
        server: Some(prosody.c2s_addr().to_string()),
        bind_ip: Some(crate::loopback(1)),
        allow_plaintext: true,
    };
    let (c, rx) = c2s::connect(&opts).await?;
    c.send(Element::builder("presence", ns::CLIENT).build())?;
    Ok((c, rx))
}

/// The number of items on `presence/active` (0 when unreadable).
pub(super) async fn active_items(c: &C2s, pubsub_jid: &str) -> usize {
    c.iq(
        client_iq("get", pubsub_jid, pubsub::items(ACTIVE)),
        // The whole node in one answer on Prosody.
        pubpresence::xmpp::paging::ANSWER_WAIT,
    )
    .await
    .map(|r| pubsub::parse_items(&r).len())
    .unwrap_or(0)
}

/// Subscribes the watcher to `node`, retrying while the component sets it up.
pub(super) async fn subscribe(c: &C2s, pubsub_jid: &str, node: &str) -> Result<(), BenchError> {
    let me = c.jid().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match c
            .iq(
                client_iq("set", pubsub_jid, pubsub::subscribe(node, &me)),
                IQ_TIMEOUT,
            )
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(BenchError::Setup(format!("subscribing to {node}: {e}")))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Registers accounts (password = name), a few prosodyctl at a time.
fn register_all(prosody: &Prosody, names: &[String]) -> Result<(), LabError> {
    for chunk in names.chunks(16) {
        let results: Vec<Result<(), LabError>> = std::thread::scope(|s| {
            let hs: Vec<_> = chunk
                .iter()
                .map(|n| s.spawn(move || prosody.register(n, n)))
                .collect();
            hs.into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(LabError::Startup("prosodyctl thread panicked".into()))
                    })
                })
                .collect()
        });
        for r in results {
            r?;
        }
    }
    Ok(())
}

/// The benchmarks' Prosody: the lab's, logging at info instead of debug
/// (the lab logs every stanza, a cost no deployment pays), optionally with
/// TCP_NODELAY, and `names` registered (password = name).
pub(crate) async fn start_prosody(
    names: Vec<String>,
    options: ProsodyOptions,
) -> Result<Prosody, BenchError> {
    tracing::info!("starting Prosody and registering {} accounts", names.len());
    tokio::task::spawn_blocking(move || -> Result<Prosody, LabError> {
        // Thousands of stanzas: not in a debug log.
        let p = Prosody::start_with(ProsodyOptions {
            quiet_log: true,
            ..options
        })?;
        register_all(&p, &names)?;
        Ok(p)
    })
    .await
    .map_err(setup)?
    .map_err(Into::into)
}
