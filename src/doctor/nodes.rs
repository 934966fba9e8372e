//! The pubsub service: a temporary node created and configured as active is,
//! its access model read back, and (with the member account) the whitelist
//! seen from a client: refused before the member is added, readable after.

use super::fixes;
use super::report::Check;
use super::Ctx;
use crate::component::publisher::Publisher;
use crate::wire::{forms, pubsub};
use crate::xmpp::c2s::{self, C2s};
use crate::xmpp::iq::again_on_wait;
use crate::xmpp::IqError;
use std::time::Duration;
use xmpp_parsers::minidom::Element;

pub const PUBSUB: &str = "pubsub";

/// The temporary nodes doctor made, deleted at the end whatever happened.
pub struct TempNodes {
    prefix: String,
    made: Vec<String>,
}

impl TempNodes {
    pub fn new(ctx: &Ctx<'_>) -> TempNodes {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        TempNodes {
            prefix: format!(
                "{}-doctor-{}-{nanos:x}",
                ctx.s.nodes.active,
                std::process::id()
            ),
            made: Vec::new(),
        }
    }

    /// Creates node `<prefix>-<suffix>` with active's configuration.
    pub async fn create(&mut self, ctx: &Ctx<'_>, suffix: &str) -> Result<String, IqError> {
        let node = format!("{}-{suffix}", self.prefix);
        let fields = publisher(ctx).active_fields(&access_model(ctx));
        // Asked again on a temporary error: see `again_on_wait` for the
        // ejabberd answer this is for.
        let form = pubsub::config_form(&fields);
        again_on_wait(|| {
            ctx.conn.iq(
                "set",
                &ctx.names.pubsub,
                pubsub::create(&node, form.clone()),
            )
        })
        .await?;
        self.made.push(node.clone());
        Ok(node)
    }

    pub async fn delete_all(&mut self, ctx: &Ctx<'_>) {
        for node in self.made.drain(..) {
            if let Err(e) = ctx
                .conn
                .iq("set", &ctx.names.pubsub, pubsub::delete(&node))
                .await
            {
                tracing::warn!(node = %node, "could not delete doctor's temporary node: {e}");
            }
        }
    }
}

pub fn access_model(ctx: &Ctx<'_>) -> String {
    ctx.s.access.model.to_string()
}

pub fn publisher(ctx: &Ctx<'_>) -> Publisher {
    Publisher {
        conn: ctx.conn.clone(),
        service: ctx.names.pubsub.clone(),
        nodes: ctx.s.nodes.clone(),
        access_model: access_model(ctx),
    }
}

/// Check 4.
pub async fn pubsub(ctx: &Ctx<'_>, temp: &mut TempNodes) -> Check {
    let fix = || fixes::pubsub_rights(&ctx.software, &ctx.names.get());
    let service = &ctx.names.pubsub;
    let node = match temp.create(ctx, "nodes").await {
        Ok(n) => n,
        Err(IqError::Timeout(t)) => {
            return Check::fail(
                PUBSUB,
                format!(
                    "creating a node on {service} got no answer within {t:?}: `pubsub` is not a \
                     pubsub service of this server, or the server drops the component's requests"
                ),
            )
            .with_fix(fix())
        }
        Err(e) => {
            return Check::fail(
                PUBSUB,
                format!("creating a node on {service} as active is configured was refused: {e}"),
            )
            .with_fix(fix())
        }
    };
    let model = access_model(ctx);
    let fields = publisher(ctx).active_fields(&model);
    let config = match ctx
        .conn
        .iq("get", service, pubsub::configure_get(&node))
        .await
    {
        Ok(c) => c,
        Err(e) => {
            return Check::fail(
                PUBSUB,
                format!("reading a node's configuration was refused: {e}"),
            )
            .with_fix(fix())
        }
    };
    let drift = config
        .children()
        .flat_map(|p| p.children())
        .find_map(forms::find)
        .map(|f| pubsub::config_drift(f, &fields, None))
        .unwrap_or_default();
    if let Some((var, have, want)) = drift.first() {
        return Check::fail(
            PUBSUB,
            format!("{service} did not apply the node configuration: {var} is {have}, not {want}"),
        )
        .with_fix(fix());
    }
    let Some(member) = ctx.member else {
        return Check::ok(
            PUBSUB,
            format!(
                "{service}: nodes created and configured ({model}); the member's view is not \
                 checked (no [watch] account)"
            ),
        );
    };
    match member_view(ctx, &node, &model, member).await {
        Ok(line) => Check::ok(
            PUBSUB,
            format!("{service}: nodes created and configured ({model}); {line}"),
        ),
        Err(line) => Check::fail(PUBSUB, line).with_fix(vec![format!(
            "[access] model = \"whitelist\" with members = [\"{}\"] in pubpresence's config",
            member.jid
        )]),
    }
}

/// The member account as a client: refused while not a member, reads and
/// subscribes once it is one.
async fn member_view(
    ctx: &Ctx<'_>,
    node: &str,
    model: &str,
    member: &crate::config::WatchSettings,
) -> Result<String, String> {
    let service = &ctx.names.pubsub;
    let (client, _rx) = c2s::connect(&crate::client::watch::login_options(member))
        .await
        .map_err(|e| format!("the member account {} could not log in: {e}", member.jid))?;
    let timeout = ctx.s.iq_timeout;
    let ask =
        |kind: &'static str, payload: Element| client_iq(&client, kind, service, payload, timeout);
    let mut line = String::new();
    if model == "whitelist" {
        match ask("get", pubsub::items(node)).await {
            Ok(_) => {
                client.close().await;
                return Err(format!(
                    "{service} let {} read a whitelist node it is not a member of: the \
                     whitelist is not enforced",
                    member.jid
                ));
            }
            Err(e) => line.push_str(&format!("a non-member is refused ({e}); ")),
        }
        let add = pubsub::affiliations_set(node, &[(member.jid.to_string(), "member")]);
        if let Err(e) = ctx.conn.iq("set", service, add).await {
            client.close().await;
            return Err(format!(
                "making {} a member of a node was refused: {e}",
                member.jid
            ));
        }
    }
    let me = client.jid().to_string();
    let r = match ask("set", pubsub::subscribe(node, &me)).await {
        Ok(_) => ask("get", pubsub::items(node)).await,
        Err(e) => Err(e),
    };
    client.close().await;
    match r {
        Ok(_) => {
            line.push_str(&format!("the member {} subscribes and reads", member.jid));
            Ok(line)
        }
        Err(e) => Err(format!(
            "the member {} may not subscribe to or read a node it is a member of: {e}",
            member.jid
        )),
    }
}

async fn client_iq(
    client: &C2s,
    kind: &str,
    to: &str,
    payload: Element,
    timeout: Duration,
) -> Result<Element, String> {
    client
        .iq(
            c2s::client_ns(crate::wire::iq(kind, "", to, "", Some(payload))),
            timeout,
        )
        .await
        .map_err(|e| match e {
            c2s::C2sError::Stanza { condition, .. } => condition,
            e => e.to_string(),
        })
}
