//! The component connection and its secret, the server's software, the
//! XEP-0356 permission message, and the other cluster nodes.

use super::fixes::{self, Names, Software};
use super::report::Check;
use super::{Ctx, DoctorError};
use crate::component::privileges::{self, Decision};
use crate::component::publisher;
use crate::config::ComponentSettings;
use crate::wire::privilege::Permissions;
use crate::xmpp::{
    connect_component, stream::connect_secondary, ConnectError, Connection, Disconnect,
};
use tokio::sync::mpsc;
use xmpp_parsers::minidom::Element;

pub const CONNECTION: &str = "connection";
pub const SERVER: &str = "server";
pub const CLUSTER: &str = "cluster";

pub struct Linked {
    pub check: Check,
    pub conn: Connection,
    pub inbound: mpsc::UnboundedReceiver<Element>,
    pub task: tokio::task::JoinHandle<Disconnect>,
}

/// Check 1: the first listed server, the handshake, the secret.
pub async fn connect(
    s: &ComponentSettings,
    names: &Names<'_>,
) -> Result<Result<Linked, Check>, DoctorError> {
    let Some(addr) = s.servers.first() else {
        return Ok(Err(Check::fail(
            CONNECTION,
            "`server` lists no address: set it to the server's component listener, host:port",
        )));
    };
    let jid = s.jid.to_string();
    match connect_component(addr, &jid, s.secret.expose(), s.iq_timeout).await {
        Ok((conn, inbound, task)) => Ok(Ok(Linked {
            check: Check::ok(
                CONNECTION,
                format!("connected to {addr} as {jid}; the secret was accepted"),
            ),
            conn,
            inbound,
            task,
        })),
        Err(ConnectError::Conflict { .. }) => Err(DoctorError::AlreadyConnected {
            jid,
            addr: addr.clone(),
        }),
        Err(e @ ConnectError::Auth { .. }) => Ok(Err(Check::fail(CONNECTION, e.to_string())
            .with_fix(fixes::connection(&Software::Unknown, names)))),
        Err(e @ ConnectError::Io { .. }) => Ok(Err(Check::fail(
            CONNECTION,
            format!(
                "{e} (nothing listens there for components: check `server` and the server's \
                 component listener)"
            ),
        )
        .with_fix(fixes::connection(&Software::Unknown, names)))),
        Err(e) => Ok(Err(Check::fail(
            CONNECTION,
            format!(
                "{e} (is {addr} a component listener, XEP-0114, and is `jid` = {jid} defined \
                 there?)"
            ),
        )
        .with_fix(fixes::connection(&Software::Unknown, names)))),
    }
}

/// What the first moments of the connection told.
pub struct First {
    pub server: Check,
    pub software: Software,
    pub permissions: Option<Permissions>,
    /// How requests must go after the permission message.
    pub decision: Option<Decision>,
    /// Every request would be dropped (a privileged component on ejabberd
    /// 24.10 and later without a usable `privileged_as`).
    pub blocked: bool,
    /// Stanzas that arrived meanwhile (presences already forwarded).
    pub early: Vec<Element>,
}

/// Check 2: the server's software (XEP-0092), read together with the
/// permission message that a privileged component gets on connect (both
/// servers send it right after the handshake, before any answer). On
/// ejabberd 24.10 and later an unwrapped request is dropped, so the version
/// is asked again, wrapped, when the grant allows it.
pub async fn identify(
    s: &ComponentSettings,
    conn: &Connection,
    inbound: &mut mpsc::UnboundedReceiver<Element>,
) -> First {
    let domain = s.domain.to_string();
    let mut early = Vec::new();
    let mut permissions = None;
    let version = {
        let ask = publisher::server_version(conn, &domain);
        tokio::pin!(ask);
        loop {
            tokio::select! {
                r = &mut ask => break Some(r),
                el = inbound.recv() => match el {
                    Some(el) => {
                        if let Some(p) = Permissions::parse(&el) {
                            permissions = Some(p);
                            if permissions.as_ref().is_some_and(|p| p.iq_advertised) {
                                // The plain request may be dropped: decide first.
                                break None;
                            }
                        } else {
                            early.push(el);
                        }
                    }
                    None => break None,
                },
            }
        }
    };
    let (mut decision, mut blocked) = settle(s, conn, permissions.as_ref());
    let version = match version {
        Some(v) => v,
        None if blocked => {
            return First {
                server: Check::warn(
                    SERVER,
                    "not asked: the server drops the component's requests (presence-route)",
                ),
                software: Software::Ejabberd {
                    version: "24.10 or later".into(),
                    major: 24,
                    minor: 10,
                },
                permissions,
                decision,
                blocked,
                early,
            };
        }
        None => publisher::server_version(conn, &domain).await,
    };
    let (server, software) = match version {
        Ok(Some(v)) => {
            let sw = Software::parse(&v);
            let check = match sw {
                Software::Unknown => Check::warn(
                    SERVER,
                    format!(
                        "{domain} runs {v}: not Prosody nor ejabberd, the fixes below name both"
                    ),
                ),
                _ => Check::ok(SERVER, format!("{domain} runs {v}")),
            };
            (check, sw)
        }
        Ok(None) | Err(_) => (
            Check::warn(
                SERVER,
                format!(
                    "{domain} does not say its software (XEP-0092 version): the fixes below \
                     name both servers"
                ),
            )
            .with_fix(fixes::version(&Software::Unknown)),
            Software::Unknown,
        ),
    };
    if permissions.is_none() && matches!(software, Software::Ejabberd { .. }) {
        // ejabberd sends the permission message from another process than
        // the one that answers the version, so the answer can come first:
        // wait for it as the component would before saying none came.
        let (received, late) = privileges::await_permissions(inbound).await;
        // The message itself among them is harmless: `early` is read for
        // presences only.
        early.extend(received);
        permissions = late;
        (decision, blocked) = settle(s, conn, permissions.as_ref());
    }
    First {
        server,
        software,
        permissions,
        decision,
        blocked,
        early,
    }
}

/// What the permissions mean for this configuration, and whether every
/// request would be dropped. A `Wrap` decision turns wrapping on.
fn settle(
    s: &ComponentSettings,
    conn: &Connection,
    permissions: Option<&Permissions>,
) -> (Option<Decision>, bool) {
    let Some(p) = permissions else {
        return (None, false);
    };
    let decision = privileges::decide(
        p,
        s.privileged_as.as_ref().map(|j| j.as_str()),
        &s.domain.to_string(),
    );
    if let Decision::Wrap { user, .. } = &decision {
        conn.wrapping().enable(user, p.clone());
    }
    let blocked = matches!(decision, Decision::Fatal(_));
    (Some(decision), blocked)
}

/// Check 11: every other listed server (a cluster node) takes the
/// component's handshake.
pub async fn cluster(ctx: &Ctx<'_>) -> Check {
    let s = ctx.s;
    if s.servers.len() < 2 {
        return Check::skip(CLUSTER, "one server listed: no cluster to check");
    }
    let jid = s.jid.to_string();
    let mut down = Vec::new();
    for addr in &s.servers[1..] {
        match connect_secondary(addr, &jid, s.secret.expose(), ctx.conn.shared()).await {
            // Dropped at once: the stream closes; the server routes to the
            // main connection again.
            Ok(secondary) => drop(secondary),
            Err(e) => down.push(format!("{addr}: {e}")),
        }
    }
    if down.is_empty() {
        Check::ok(
            CLUSTER,
            format!(
                "all {} listed nodes take the component's connection",
                s.servers.len()
            ),
        )
    } else {
        Check::fail(
            CLUSTER,
            format!(
                "{} of {} listed nodes refused the component: {}",
                down.len(),
                s.servers.len(),
                down.join("; ")
            ),
        )
        .with_fix(vec![
            "each node needs the same ejabberd_service listener and password (ejabberd.yml \
             is shared by the cluster), and `server` must list each node's listener"
                .into(),
        ])
    }
}
