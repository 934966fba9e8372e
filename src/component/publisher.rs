//! Everything the component asks of the server: pubsub writes and node
//! set-up, and the XEP-0133 admin commands (online users, user-stats).

use crate::wire::adhoc::{self, Session};
use crate::wire::status::{self, ServiceStatus};
use crate::wire::user::UserItem;
use crate::wire::{disco, forms, ns, pubsub, time};
use crate::xmpp::iq::again_on_wait;
use crate::xmpp::{paging, Connection, IqError};
use futures::StreamExt;
use std::collections::HashSet;
use xmpp_parsers::minidom::Element;

/// Node names (`[nodes]`; docs/protocol.md, "Nodes").
pub use crate::config::Nodes as NodeNames;

/// A failure worth one clear line that tells the operator what to change.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{what} node {node:?} on {service} (access model {model}) was refused: {err}{hint}")]
    Refused {
        what: &'static str,
        node: String,
        service: String,
        model: String,
        err: IqError,
        hint: &'static str,
    },
    /// The request got no answer at all: nothing refused it, so the line
    /// says so, with what usually swallows such a request.
    #[error(
        "{what} node {node:?} on {service} got no answer within {timeout:?}: nothing refused \
         it, the request was dropped or never reached a pubsub service (likely causes: \
         `pubsub = {service:?}` is not a pubsub service of this server; ejabberd 24.10 and later \
         with mod_privilege drop a privileged component's requests unless `privileged_as` is set \
         and granted (README, \"XEP-0356 on ejabberd 24.10 and later\"); a server too busy to \
         answer within `iq_timeout`)"
    )]
    NoAnswer {
        what: &'static str,
        node: String,
        service: String,
        timeout: std::time::Duration,
    },
}

impl SetupError {
    /// Refusals a retry will not fix (permissions, unsupported models).
    pub fn is_fatal(&self) -> bool {
        let SetupError::Refused { err, .. } = self else {
            return false;
        };
        matches!(
            err.condition(),
            Some("forbidden")
                | Some("not-authorized")
                | Some("feature-not-implemented")
                | Some("not-acceptable")
                | Some("not-allowed")
        )
    }
}

fn hint(err: &IqError) -> &'static str {
    match err.condition() {
        Some("forbidden") | Some("not-authorized") | Some("not-allowed") => {
            " (the component needs the right to create and configure nodes: on Prosody put its JID \
             in the global `admins`; on ejabberd give it the pubsub access rules)"
        }
        Some("feature-not-implemented") | Some("not-acceptable") => {
            " (the pubsub service refused this configuration: check [access] model and, on \
             Prosody, `pubsub_max_items` on the pubsub component)"
        }
        _ => "",
    }
}

/// The error for a node request that failed: refused (a stanza error), or
/// not answered at all.
fn setup_error(
    what: &'static str,
    node: &str,
    service: &str,
    model: &str,
    err: IqError,
) -> SetupError {
    if let IqError::Timeout(timeout) = err {
        return SetupError::NoAnswer {
            what,
            node: node.to_string(),
            service: service.to_string(),
            timeout,
        };
    }
    SetupError::Refused {
        what,
        node: node.to_string(),
        service: service.to_string(),
        model: model.to_string(),
        hint: hint(&err),
        err,
    }
}

/// The pubsub side: one service, three nodes, over one connection.
#[derive(Clone)]
pub struct Publisher {
    pub conn: Connection,
    pub service: String,
    pub nodes: NodeNames,
    /// The access model the nodes get.
    pub access_model: String,
}

impl Publisher {
    async fn pubsub_iq(&self, kind: &str, payload: Element) -> Result<Element, IqError> {
        self.conn.iq(kind, &self.service, payload).await
    }

    /// A write (a node-owner request: create, configure, set members; or a
    /// publish or retraction), asked again on a temporary error: a
    /// transaction ejabberd before 25.10 gave up, or its SQL store's
    /// "Database failure" (`again_on_wait`; README, "Configuring ejabberd").
    /// Nothing was written then, so an item is never published twice.
    async fn write_iq(&self, payload: impl Fn() -> Element) -> Result<Element, IqError> {
        again_on_wait(|| self.pubsub_iq("set", payload())).await
    }

    /// Makes sure the status node exists with its configuration before
    /// anything is published on it: ejabberd would otherwise create it on
    /// the first publish with its defaults (open access).
    pub async fn ensure_status_node(&self) -> Result<(), SetupError> {
        let fields = self.status_fields(&self.access_model);
        self.configure_or_create(&self.nodes.status, &fields, &self.access_model)
            .await
            .map(|_created| ())
    }

    /// Configures `node`, creating it (with that configuration) if missing.
    /// True when it was missing.
    async fn configure_or_create(
        &self,
        node: &str,
        fields: &[(&'static str, String)],
        access_model: &str,
    ) -> Result<bool, SetupError> {
        let config = pubsub::config_form(fields);
        match self
            .write_iq(|| pubsub::configure(node, config.clone()))
            .await
        {
            Ok(_) => Ok(false),
            Err(e) if e.condition() == Some("item-not-found") => {
                tracing::info!(node = %node, "creating node");
                self.create(node, config)
                    .await
                    .map(|()| true)
                    .map_err(|e| self.refused("creating", node, access_model, e))
            }
            Err(e) => Err(self.refused("configuring", node, access_model, e)),
        }
    }

    /// A refusal of `what` on `node`, configured with access `model`.
    fn refused(&self, what: &'static str, node: &str, model: &str, err: IqError) -> SetupError {
        setup_error(what, node, &self.service, model, err)
    }

    /// Publishes the service status (creating the status node if missing).
    pub async fn publish_status(
        &self,
        st: ServiceStatus,
        instance: Option<&str>,
    ) -> Result<(), IqError> {
        self.publish_status_form(status::to_element(st, instance))
            .await
    }

    /// `offline` at a clean stop: when it stopped reading presence, and the
    /// copy of active saved with it (`saved`).
    pub async fn publish_offline(
        &self,
        instance: Option<&str>,
        saved: Option<&str>,
        stopped: &time::Timestamp,
    ) -> Result<(), IqError> {
        self.publish_status_form(status::offline(instance, saved, stopped))
            .await
    }

    async fn publish_status_form(&self, form: Element) -> Result<(), IqError> {
        let payload = || pubsub::publish(&self.nodes.status, Some("current"), form.clone());
        match self.pubsub_iq("set", payload()).await {
            Err(e) if e.condition() == Some("item-not-found") => {
                self.create(&self.nodes.status, self.status_config(&self.access_model))
                    .await?;
                self.pubsub_iq("set", payload()).await.map(|_| ())
            }
            r => r.map(|_| ()),
        }
    }

    fn base_config(&self, access_model: &str) -> Vec<(&'static str, String)> {
        vec![
            ("pubsub#access_model", access_model.to_string()),
            ("pubsub#deliver_payloads", "1".into()),
            ("pubsub#publish_model", "publishers".into()),
        ]
    }

    fn status_fields(&self, access_model: &str) -> Vec<(&'static str, String)> {
        let mut c = self.base_config(access_model);
        c.push(("pubsub#persist_items", "1".into()));
        c.push(("pubsub#max_items", "1".into()));
        c.push((
            "pubsub#send_last_published_item",
            "on_sub_and_presence".into(),
        ));
        // A reader's subscription dies with the node: it must hear of a
        // deletion to subscribe again (docs/protocol.md, "Client procedure",
        // step 8). Prosody notifies unless told not to, ejabberd only if asked.
        c.push(("pubsub#notify_delete", "1".into()));
        c
    }

    fn live_fields(&self, access_model: &str) -> Vec<(&'static str, String)> {
        let mut c = self.base_config(access_model);
        c.push(("pubsub#persist_items", "0".into()));
        c.push(("pubsub#send_last_published_item", "never".into()));
        c.push(("pubsub#notify_delete", "1".into()));
        c
    }

    /// The configuration `active` gets (also `doctor`'s test nodes).
    pub fn active_fields(&self, access_model: &str) -> Vec<(&'static str, String)> {
        let mut c = self.base_config(access_model);
        c.push(("pubsub#persist_items", "1".into()));
        c.push(("pubsub#max_items", "max".into()));
        c.push(("pubsub#send_last_published_item", "never".into()));
        c.push(("pubsub#notify_retract", "1".into()));
        c
    }

    fn status_config(&self, access_model: &str) -> Element {
        pubsub::config_form(&self.status_fields(access_model))
    }

    /// The three nodes with the configuration each gets.
    fn plan(&self, access_model: &str) -> [(&String, Vec<(&'static str, String)>); 3] {
        [
            (&self.nodes.status, self.status_fields(access_model)),
            (&self.nodes.live, self.live_fields(access_model)),
            (&self.nodes.active, self.active_fields(access_model)),
        ]
    }

    async fn create(&self, node: &str, config: Element) -> Result<(), IqError> {
        match self.write_iq(|| pubsub::create(node, config.clone())).await {
            // Created meanwhile (a second instance, a retry): fine.
            Err(e) if e.condition() == Some("conflict") => Ok(()),
            r => r.map(|_| ()),
        }
    }

    /// Creates live and active if missing and configures them (start-up has
    /// set up the status node already, with `ensure_status_node`, before
    /// publishing `init`), and applies the whitelist members to all three.
    /// True when active was missing (it is empty now).
    pub async fn setup_nodes(
        &self,
        access_model: &str,
        members: &[String],
    ) -> Result<bool, SetupError> {
        let mut active_created = false;
        for (node, fields) in self.plan(access_model) {
            if *node != self.nodes.status {
                let created = self
                    .configure_or_create(node, &fields, access_model)
                    .await?;
                active_created |= created && *node == self.nodes.active;
            }
            if access_model == "whitelist" {
                self.apply_members(node, members)
                    .await
                    .map_err(|e| self.refused("setting members", node, access_model, e))?;
            }
        }
        Ok(active_created)
    }

    /// The audit's look at the nodes (README, "Audit: active heals itself"): each node's configuration
    /// is read and set again only where it drifted (one log line naming what
    /// changed), and whitelist members are put right. Reading rather than
    /// blindly re-setting keeps the server from rewriting three node
    /// configurations at every audit. A node that no longer exists is
    /// returned: everything on it is gone, the caller starts over.
    pub async fn check_nodes(
        &self,
        access_model: &str,
        members: &[String],
        max_floor: Option<usize>,
    ) -> Result<Option<String>, SetupError> {
        for (node, fields) in self.plan(access_model) {
            let refused = |what, err| self.refused(what, node, access_model, err);
            let res = match self.pubsub_iq("get", pubsub::configure_get(node)).await {
                Err(e) if e.condition() == Some("item-not-found") => return Ok(Some(node.clone())),
                r => r.map_err(|e| refused("reading the configuration of", e))?,
            };
            let form = res
                .children()
                .flat_map(|p| p.children())
                .find_map(crate::wire::forms::find);
            let drift = form
                .map(|f| pubsub::config_drift(f, &fields, max_floor))
                .unwrap_or_default();
            if !drift.is_empty() {
                let what: Vec<String> = drift
                    .iter()
                    .map(|(var, have, want)| format!("{var}: {have} instead of {want}"))
                    .collect();
                tracing::warn!(
                    node = %node,
                    "node was reconfigured behind our back ({}); configuring it again",
                    what.join(", ")
                );
                self.write_iq(|| pubsub::configure(node, pubsub::config_form(&fields)))
                    .await
                    .map_err(|e| refused("configuring", e))?;
            }
            if access_model == "whitelist" {
                self.apply_members(node, members)
                    .await
                    .map_err(|e| refused("setting members", e))?;
            }
        }
        Ok(None)
    }

    async fn apply_members(&self, node: &str, members: &[String]) -> Result<(), IqError> {
        let current = self
            .pubsub_iq("get", pubsub::affiliations_get(node))
            .await?;
        let current = pubsub::parse_affiliations(&current);
        let wanted: HashSet<&str> = members.iter().map(String::as_str).collect();
        let mut changes: Vec<(String, &str)> = Vec::new();
        for (jid, aff) in &current {
            if aff == "member" && !wanted.contains(jid.as_str()) {
                changes.push((jid.clone(), "none"));
            }
        }
        for m in members {
            if !current.iter().any(|(j, a)| j == m && a == "member") {
                changes.push((m.clone(), "member"));
            }
        }
        if !changes.is_empty() {
            tracing::info!(node, changes = changes.len(), "updating node members");
            self.write_iq(|| pubsub::affiliations_set(node, &changes))
                .await?;
        }
        Ok(())
    }

    /// How many items active can hold, as the server reports it: the
    /// configured `pubsub#max_items`, or for `max` the top of its allowed
    /// range (Prosody: `pubsub_max_items`). None when the server won't say.
    pub async fn active_capacity(&self) -> Option<usize> {
        let res = self
            .pubsub_iq("get", pubsub::configure_get(&self.nodes.active))
            .await
            .ok()?;
        let form = res
            .children()
            .flat_map(|p| p.children())
            .find_map(forms::find)?;
        pubsub::max_items(form)
    }

    /// The status node's current item: (status, instance).
    pub async fn current_status(&self) -> Result<Option<(ServiceStatus, Option<String>)>, IqError> {
        self.status_item(status::from_element).await
    }

    /// The status node's current item as a start-up reads it: as the last
    /// run left it.
    pub async fn last_status(&self) -> Result<Option<status::Item>, IqError> {
        self.status_item(status::read).await
    }

    /// The status node's last readable item, read with `read`.
    async fn status_item<T>(
        &self,
        read: impl Fn(&Element) -> Option<T>,
    ) -> Result<Option<T>, IqError> {
        let res = self
            .pubsub_iq("get", pubsub::items(&self.nodes.status))
            .await?;
        Ok(pubsub::parse_items(&res)
            .into_iter()
            .filter_map(|(_, p)| p.as_ref().and_then(&read))
            .next_back())
    }

    /// The items on active. Items that are not a readable `<user/>` whose id
    /// is its full JID are returned apart (to be retracted).
    /// Read page by page where the service pages (`xmpp::paging`).
    pub async fn active_items(&self) -> Result<(Vec<UserItem>, Vec<String>), IqError> {
        // A whole node in one answer may take the server longer than any
        // other request (`paging::ANSWER_WAIT`).
        let items = paging::all_items(&self.nodes.active, paging::PAGE, |ask| {
            self.conn.iq_whole("get", &self.service, ask)
        })
        .await?;
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for (id, payload) in items {
            match payload.as_ref().and_then(UserItem::from_element) {
                Some(item) if item.fulljid == id => good.push(item),
                _ => bad.push(id),
            }
        }
        Ok((good, bad))
    }

    pub async fn set_active(&self, item: &UserItem) -> Result<(), IqError> {
        self.write_iq(|| {
            pubsub::publish(&self.nodes.active, Some(&item.fulljid), item.to_element())
        })
        .await
        .map(|_| ())
    }

    pub async fn retract_active(&self, fulljid: &str) -> Result<(), IqError> {
        match self
            .write_iq(|| pubsub::retract(&self.nodes.active, fulljid))
            .await
        {
            // Already gone: the goal is reached.
            Err(e) if e.condition() == Some("item-not-found") => Ok(()),
            r => r.map(|_| ()),
        }
    }

    pub async fn publish_live(&self, item: &UserItem) -> Result<(), IqError> {
        self.write_iq(|| pubsub::publish(&self.nodes.live, None, item.to_element()))
            .await
            .map(|_| ())
    }
}

/// Runs an admin command. One round trip where the server takes the form
/// with the first request (Prosody does); otherwise the XEP-0050 two steps
/// (execute, then submit with the session id).
async fn admin_command(
    conn: &Connection,
    domain: &str,
    node: &str,
    submit: impl Fn(Option<&str>) -> Element,
) -> Result<Element, IqError> {
    let sessionid = match conn.iq("set", domain, submit(None)).await {
        Ok(res) => {
            let Some(reply) = adhoc::reply(&res) else {
                return Ok(res);
            };
            if reply.status != Some("executing") {
                return Ok(res);
            }
            reply.sessionid.map(str::to_string)
        }
        Err(IqError::Stanza(_)) => {
            let first = conn.iq("set", domain, adhoc::execute(node)).await?;
            adhoc::reply(&first)
                .and_then(|r| r.sessionid)
                .map(str::to_string)
        }
        Err(e) => return Err(e),
    };
    conn.iq("set", domain, submit(sessionid.as_deref())).await
}

/// One connected session as the server lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnlineSession {
    pub fulljid: String,
    pub bare: String,
    /// Known when the listing states it (Prosody), else learned with user-stats.
    pub ip: Option<String>,
    /// The show of its current presence, when the listing states one
    /// (Prosody); the presence itself still comes by probe or as sent.
    pub status: Option<crate::wire::user::Status>,
}

/// Which listing the server answered last time, so that a server that
/// refuses the admin command (ejabberd) is asked the right way at once.
#[derive(Clone, Default)]
pub struct Listing(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Listing {
    /// A listing already known to be ejabberd's disco#items node (for a
    /// caller that knows its server: the lab's floors).
    pub fn disco_known() -> Listing {
        let l = Listing::default();
        l.use_disco();
        l
    }

    fn disco(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn use_disco(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the listing comes from the admin command, whose server
    /// (Prosody) answers a component's stanzas in order: a round trip behind
    /// the probes then proves every probe answer has arrived.
    pub fn ordered(&self) -> bool {
        !self.disco()
    }
}

/// Every session of the server in one request where the server allows it:
/// Prosody's online-users list with details (sessions and addresses), else
/// ejabberd's disco#items `online users` node (full JIDs); which of the two
/// works is remembered in `listing`. A user listed without session lines (a
/// server that ignores `details`) is asked with user-stats.
pub async fn online_sessions_via(
    conn: &Connection,
    domain: &str,
    listing: &Listing,
) -> Result<Vec<OnlineSession>, IqError> {
    let mut refusal = None;
    let listed = if listing.disco() {
        None
    } else {
        // Every session in one answer: 4.9 s at 100,000 on Prosody 13, and
        // queued behind a fetch of active (`paging::ANSWER_WAIT`).
        match conn
            .iq_whole("set", domain, adhoc::online_users_submit(None))
            .await
        {
            // Only a completed answer with session lines counts: ejabberd
            // answers bare JIDs to `execute` and refuses `complete`.
            Ok(res) => adhoc::reply(&res)
                .filter(|r| r.status == Some("completed"))
                .and_then(|r| r.form)
                .map(adhoc::parse_online_sessions),
            Err(IqError::Stanza(e)) => {
                tracing::debug!("online-users list refused ({e}); asking disco#items");
                refusal = Some(IqError::Stanza(e));
                None
            }
            Err(e) => return Err(e),
        }
    };
    let Some(listed) = listed else {
        let res = match conn
            .iq_whole("get", domain, disco::items(Some(disco::ONLINE_USERS_NODE)))
            .await
        {
            Ok(res) => res,
            // Neither listing: the first refusal says why (a server without
            // admin rights for us refuses the command, and then has no
            // disco node either, which would only confuse).
            Err(e) => return Err(refusal.unwrap_or(e)),
        };
        // Remembered only once it worked.
        listing.use_disco();
        return Ok(disco::parse_items(&res)
            .into_iter()
            .filter_map(|full| {
                let (bare, _) = full.split_once('/')?;
                Some(OnlineSession {
                    bare: bare.to_string(),
                    fulljid: full,
                    ip: None,
                    status: None,
                })
            })
            .collect());
    };
    let mut out = Vec::new();
    let mut ask = Vec::new();
    for (bare, sessions) in listed {
        if sessions.is_empty() {
            ask.push(bare);
            continue;
        }
        out.extend(sessions.into_iter().map(|s| OnlineSession {
            fulljid: format!("{bare}/{}", s.resource),
            bare: bare.clone(),
            ip: s.ip,
            status: s.status,
        }));
    }
    let asked = futures::stream::iter(ask)
        .map(|bare| async move {
            let r = user_stats(conn, domain, &bare).await;
            (bare, r)
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    for (bare, r) in asked {
        for s in r? {
            out.push(OnlineSession {
                fulljid: format!("{bare}/{}", s.resource),
                bare: bare.clone(),
                ip: Some(s.ip),
                status: None,
            });
        }
    }
    Ok(out)
}

/// The sessions of one user with their addresses (user-stats).
pub async fn user_stats(
    conn: &Connection,
    domain: &str,
    bare: &str,
) -> Result<Vec<Session>, IqError> {
    let res = admin_command(conn, domain, ns::USER_STATS, |sid| {
        adhoc::user_stats_submit(sid, bare)
    })
    .await?;
    Ok(adhoc::reply(&res)
        .and_then(|r| r.form)
        .map(adhoc::parse_user_stats)
        .unwrap_or_default())
}

/// The server's software and version (XEP-0092), as `Prosody 13.0.1`;
/// `Ok(None)` when the answer says neither.
pub async fn server_version(conn: &Connection, domain: &str) -> Result<Option<String>, IqError> {
    let query = Element::builder("query", ns::VERSION).build();
    let answer = conn
        .iq_with_timeout("get", domain, query, VERSION_TIMEOUT)
        .await?;
    let Some(result) = answer.get_child("query", ns::VERSION).cloned() else {
        return Ok(None);
    };
    Ok(xmpp_parsers::version::VersionResult::try_from(result)
        .ok()
        .map(|v| format!("{} {}", v.name.trim(), v.version.trim())))
}

/// Bound on the version question: it only feeds a log line.
const VERSION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What to tell the operator when an admin command is refused or unanswered.
pub fn admin_hint(err: &IqError) -> &'static str {
    if let IqError::Timeout(_) = err {
        return "Nothing refused the request: it got no answer (likely causes: ejabberd 24.10 \
                and later with mod_privilege drop a privileged component's requests unless \
                `privileged_as` is set and granted, README \"XEP-0356 on ejabberd 24.10 and \
                later\"; a server too busy to answer within `iq_timeout`)";
    }
    match err.condition() {
        Some("forbidden") | Some("not-authorized") | Some("item-not-found") | Some("service-unavailable") => {
            "the component needs admin rights on the server: on Prosody add its JID to the global \
             `admins` and enable `admin_adhoc`; on ejabberd grant it `configure` access with mod_configure"
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::StanzaError;
    use std::time::Duration;

    fn publisher_error(err: IqError) -> String {
        setup_error(
            "configuring",
            "presence/status",
            "pubsub.localhost",
            "whitelist",
            err,
        )
        .to_string()
    }

    #[test]
    fn no_answer_is_never_called_a_refusal() {
        let line = publisher_error(IqError::Timeout(Duration::from_secs(10)));
        assert!(
            line.starts_with(
                "configuring node \"presence/status\" on pubsub.localhost got no answer within 10s: \
                 nothing refused it"
            ),
            "{line}"
        );
        assert!(!line.contains("refused:"), "{line}");
        assert!(line.contains("privileged_as"), "{line}");
        assert!(
            admin_hint(&IqError::Timeout(Duration::from_secs(1))).contains("no answer"),
            "the admin hint names the silence"
        );
        let refused = publisher_error(IqError::Stanza(StanzaError {
            condition: "forbidden".into(),
            kind: "auth".into(),
            text: None,
            app: None,
        }));
        assert!(
            refused.starts_with(
                "configuring node \"presence/status\" on pubsub.localhost (access model \
                 whitelist) was refused: forbidden (the component needs"
            ),
            "{refused}"
        );
    }
}
