//! `pubpresence doctor`: the server's set-up checked live, one line per
//! check, with the configuration lines that fix each problem (README,
//! "Checking the set-up: `pubpresence doctor`").
//!
//! It connects as `run` would and changes nothing the operator owns: it
//! works on temporary nodes of its own (deleted at the end), reads the real
//! nodes at most, and never writes active. A command on top of `component`
//! (whose publisher and admin requests it reuses) and of the transports.

mod clock;
pub mod fixes;
mod link;
mod nodes;
pub mod report;
mod sessions;
mod storage;

use crate::config::{ComponentSettings, WatchSettings};
use crate::xmpp::Connection;
use fixes::{Names, Software};
pub use report::{exit_code, Check, Verdict};
use std::time::Instant;

/// What doctor needs: the component's settings and, when the config has a
/// `[watch]` table, the member account that plays a client.
pub struct Options {
    pub component: ComponentSettings,
    pub member: Option<WatchSettings>,
}

/// Why doctor could not run its checks at all (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    #[error(
        "{jid} is already connected to {addr} (conflict): a `pubpresence run` is probably \
         running; stop it while doctor runs (the server gives one component one connection)"
    )]
    AlreadyConnected { jid: String, addr: String },
}

/// The checks' names, in the order they are printed.
pub const CHECKS: &[&str] = &[
    link::CONNECTION,
    link::SERVER,
    sessions::PRESENCE_ROUTE,
    sessions::ADMIN,
    nodes::PUBSUB,
    storage::CAPACITY,
    storage::COST,
    storage::CORRECTNESS,
    sessions::UNSEEN,
    clock::CLOCK,
    link::CLUSTER,
];

/// What the checks share once connected.
struct Ctx<'a> {
    s: &'a ComponentSettings,
    member: Option<&'a WatchSettings>,
    conn: Connection,
    software: Software,
    /// Sessions the admin listing returned (None: the listing failed).
    sessions: Option<Vec<crate::component::publisher::OnlineSession>>,
    names: NamesOwned,
}

struct NamesOwned {
    component: String,
    domain: String,
    pubsub: String,
}

impl NamesOwned {
    fn get(&self) -> Names<'_> {
        Names {
            component: &self.component,
            domain: &self.domain,
            pubsub: &self.pubsub,
        }
    }
}

/// Runs every check; `each` sees each result as soon as it is known.
pub async fn run(opts: &Options, each: &mut dyn FnMut(&Check)) -> Result<Vec<Check>, DoctorError> {
    let mut out: Vec<Check> = Vec::new();
    let mut push = |c: Check, out: &mut Vec<Check>| {
        each(&c);
        out.push(c);
    };
    let s = &opts.component;
    let names = NamesOwned {
        component: s.jid.to_string(),
        domain: s.domain.to_string(),
        pubsub: s.pubsub.to_string(),
    };
    let started = Instant::now();
    let linked = link::connect(s, &names.get()).await?;
    let (conn, mut inbound, _task) = match linked {
        Ok(l) => {
            push(l.check.took(started.elapsed()), &mut out);
            (l.conn, l.inbound, l.task)
        }
        Err(check) => {
            push(check.took(started.elapsed()), &mut out);
            for name in &CHECKS[1..] {
                push(
                    Check::skip(name, "not run: no connection to the server"),
                    &mut out,
                );
            }
            return Ok(out);
        }
    };
    let t = Instant::now();
    let first = link::identify(s, &conn, &mut inbound).await;
    let software = first.software.clone();
    push(first.server.clone().took(t.elapsed()), &mut out);
    push(
        sessions::presence_route(&first, &software, &names.get()),
        &mut out,
    );
    let mut ctx = Ctx {
        s,
        member: opts.member.as_ref(),
        conn,
        software,
        sessions: None,
        names,
    };
    if first.blocked {
        // The server drops every request: nothing further can be asked.
        for name in &CHECKS[3..] {
            push(
                Check::skip(
                    name,
                    "not run: the server drops the component's requests (presence-route)",
                ),
                &mut out,
            );
        }
        ctx.conn.close().await;
        return Ok(out);
    }
    let t = Instant::now();
    let admin = sessions::admin(&mut ctx).await;
    push(admin.took(t.elapsed()), &mut out);
    let mut temp = nodes::TempNodes::new(&ctx);
    let t = Instant::now();
    let pubsub = nodes::pubsub(&ctx, &mut temp).await;
    let pubsub_ok = pubsub.result != Verdict::Fail;
    push(pubsub.took(t.elapsed()), &mut out);
    if pubsub_ok {
        for c in storage::checks(&ctx, &mut temp).await {
            push(c, &mut out);
        }
    } else {
        for name in [storage::CAPACITY, storage::COST, storage::CORRECTNESS] {
            push(
                Check::skip(name, "not run: no temporary node could be created (pubsub)"),
                &mut out,
            );
        }
    }
    temp.delete_all(&ctx).await;
    let t = Instant::now();
    let unseen = sessions::unseen(&ctx, &first, &mut inbound).await;
    push(unseen.took(t.elapsed()), &mut out);
    let t = Instant::now();
    push(clock::clock(&ctx).await.took(t.elapsed()), &mut out);
    let t = Instant::now();
    push(link::cluster(&ctx).await.took(t.elapsed()), &mut out);
    ctx.conn.close().await;
    Ok(out)
}
