//! Who is connected and how their presence reaches the component: admin
//! rights (the session listing and user-stats), the presence route (roster
//! subscriptions or XEP-0356), and the sessions the component cannot see.

use super::fixes::{self, Names, Software};
use super::link::First;
use super::report::Check;
use super::Ctx;
use crate::component::privileges::Decision;
use crate::component::publisher::{self, Listing};
use crate::wire::presence;
use crate::xmpp::IqError;
use std::collections::HashSet;
use tokio::sync::mpsc;
use xmpp_parsers::minidom::Element;

pub const ADMIN: &str = "admin";
pub const PRESENCE_ROUTE: &str = "presence-route";
pub const UNSEEN: &str = "unseen-sessions";

/// How many JIDs a line names before it says "and N more".
const NAMED: usize = 5;

/// Check 8: roster subscriptions or XEP-0356, and on ejabberd 24.10 and
/// later whether the grant lets the component's requests through.
pub fn presence_route(first: &First, sw: &Software, names: &Names) -> Check {
    let Some(perms) = &first.permissions else {
        return Check::ok(
            PRESENCE_ROUTE,
            "roster subscriptions: the server grants no XEP-0356 privileges, so the component \
             sees the users who have it in their roster (unseen-sessions counts the others)",
        );
    };
    match &first.decision {
        Some(Decision::Fatal(line)) => {
            let missing = perms.missing(crate::wire::privilege::NEEDED);
            let missing = if missing.is_empty() {
                crate::wire::privilege::NEEDED.to_vec()
            } else {
                missing
            };
            Check::fail(PRESENCE_ROUTE, line.clone())
                .with_fix(fixes::privileged_iq(names, &missing))
        }
        _ => match &perms.presence {
            Some(kind) => Check::ok(
                PRESENCE_ROUTE,
                format!(
                    "XEP-0356 presence permission ({kind}) from {}: every user's presence, \
                     roster or not{}",
                    perms.host,
                    if matches!(first.decision, Some(Decision::Wrap { .. })) {
                        "; requests go as privileged IQs (privileged_as), and the grant names them"
                    } else {
                        ""
                    }
                ),
            ),
            None => Check::warn(
                PRESENCE_ROUTE,
                format!(
                    "{} sent XEP-0356 permissions without presence: the component sees only the \
                     users who have it in their roster",
                    perms.host
                ),
            )
            .with_fix(fixes::presence_route(sw, names)),
        },
    }
}

/// Check 3: the session listing and user-stats both answered.
pub async fn admin(ctx: &mut Ctx<'_>) -> Check {
    let domain = ctx.s.domain.to_string();
    let listing = Listing::default();
    let fix = || fixes::admin(&ctx.software, &ctx.names.get());
    let sessions = match publisher::online_sessions_via(&ctx.conn, &domain, &listing).await {
        Ok(s) => s,
        Err(e) => {
            return Check::fail(ADMIN, format!("listing the online sessions failed: {e}"))
                .with_fix(fix())
        }
    };
    // user-stats for a connected user when there is one; else for an
    // account that need not exist: a server that grants the command answers
    // (empty), one that does not refuses it.
    let who = sessions
        .first()
        .map(|s| s.bare.clone())
        .or_else(|| ctx.member.map(|m| m.jid.to_string()))
        .unwrap_or_else(|| format!("pubpresence-doctor@{domain}"));
    let stats = publisher::user_stats(&ctx.conn, &domain, &who).await;
    let n = sessions.len();
    let users: HashSet<&str> = sessions.iter().map(|s| s.bare.as_str()).collect();
    let users = users.len();
    ctx.sessions = Some(sessions);
    match stats {
        Ok(_) => Check::ok(
            ADMIN,
            format!("admin rights: {n} sessions of {users} users listed, user-stats answered"),
        ),
        Err(e) if refused(&e) => Check::fail(
            ADMIN,
            format!("user-stats (the sessions' IP addresses) was refused for {who}: {e}"),
        )
        .with_fix(fix()),
        Err(e) => Check::ok(
            ADMIN,
            format!(
                "admin rights: {n} sessions of {users} users listed; user-stats for {who} \
                 answered {e}"
            ),
        ),
    }
}

/// A refusal that means the command is not granted (or not there).
fn refused(e: &IqError) -> bool {
    match e {
        IqError::Stanza(_) => matches!(
            e.condition(),
            Some(
                "forbidden"
                    | "not-authorized"
                    | "service-unavailable"
                    | "feature-not-implemented"
                    | "not-allowed"
            )
        ),
        _ => true,
    }
}

/// Check 9: listed sessions whose presence does not reach the component:
/// each listed user is probed; a user who answers nothing within
/// `probe_timeout` has no subscription with the component (and, on a
/// roster-only server, stays invisible to `run`).
pub async fn unseen(
    ctx: &Ctx<'_>,
    first: &First,
    inbound: &mut mpsc::UnboundedReceiver<Element>,
) -> Check {
    let Some(sessions) = &ctx.sessions else {
        return Check::skip(UNSEEN, "not run: the session listing failed (admin)");
    };
    let privileged = first
        .permissions
        .as_ref()
        .is_some_and(|p| p.presence.is_some());
    if privileged {
        return Check::ok(
            UNSEEN,
            format!(
                "XEP-0356 presence: all {} listed sessions are visible without a roster entry",
                sessions.len()
            ),
        );
    }
    let jid = ctx.s.jid.to_string();
    let users: HashSet<&str> = sessions.iter().map(|s| s.bare.as_str()).collect();
    let mut seen: HashSet<String> = HashSet::new();
    let note = |el: &Element, seen: &mut HashSet<String>| {
        if el.name() == "presence" && el.attr("type").is_none() {
            if let Some(from) = el.attr("from") {
                seen.insert(from.split('/').next().unwrap_or(from).to_string());
            }
        }
    };
    for el in &first.early {
        note(el, &mut seen);
    }
    for u in &users {
        let _ = ctx.conn.send(presence::probe(&jid, u));
    }
    let deadline = tokio::time::sleep(ctx.s.probe_timeout);
    tokio::pin!(deadline);
    while !users.iter().all(|u| seen.contains(*u)) {
        tokio::select! {
            el = inbound.recv() => match el {
                Some(el) => note(&el, &mut seen),
                None => break,
            },
            _ = &mut deadline => break,
        }
    }
    let mut missing: Vec<&str> = sessions
        .iter()
        .filter(|s| !seen.contains(&s.bare))
        .map(|s| s.fulljid.as_str())
        .collect();
    missing.sort_unstable();
    if missing.is_empty() {
        return Check::ok(
            UNSEEN,
            format!("all {} listed sessions answered a probe", sessions.len()),
        );
    }
    let named: Vec<&str> = missing.iter().take(NAMED).copied().collect();
    let more = missing.len().saturating_sub(NAMED);
    let rest = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    Check::fail(
        UNSEEN,
        format!(
            "{} of {} connected sessions are invisible to the component (no presence, no \
             subscription): {}{rest}",
            missing.len(),
            sessions.len(),
            named.join(", ")
        ),
    )
    .with_fix(fixes::presence_route(&ctx.software, &ctx.names.get()))
}
