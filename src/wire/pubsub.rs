//! XEP-0060 requests and notifications, as payloads of IQs and messages.

use super::Attr;
use super::{forms, ns};
use xmpp_parsers::minidom::Element;

const NODE_CONFIG: &str = "http://jabber.org/protocol/pubsub#node_config";

fn pubsub(ns: &str, child: Element) -> Element {
    Element::builder("pubsub", ns).append(child).build()
}

/// Publishes `payload` as item `id` (server-assigned when None).
pub fn publish(node: &str, id: Option<&str>, payload: Element) -> Element {
    let mut item = Element::builder("item", ns::PUBSUB);
    if let Some(id) = id {
        item = item.a("id", id);
    }
    pubsub(
        ns::PUBSUB,
        Element::builder("publish", ns::PUBSUB)
            .a("node", node)
            .append(item.append(payload).build())
            .build(),
    )
}

/// Retracts item `id`, notifying subscribers.
pub fn retract(node: &str, id: &str) -> Element {
    pubsub(
        ns::PUBSUB,
        Element::builder("retract", ns::PUBSUB)
            .a("node", node)
            .a("notify", "true")
            .append(Element::builder("item", ns::PUBSUB).a("id", id).build())
            .build(),
    )
}

/// A node configuration form from (field, value) pairs.
pub fn config_form(fields: &[(&str, String)]) -> Element {
    let fields: Vec<(&str, Vec<String>)> =
        fields.iter().map(|(k, v)| (*k, vec![v.clone()])).collect();
    forms::build("submit", Some(NODE_CONFIG), &fields)
}

/// Creates `node` with a configuration.
pub fn create(node: &str, config: Element) -> Element {
    Element::builder("pubsub", ns::PUBSUB)
        .append(
            Element::builder("create", ns::PUBSUB)
                .a("node", node)
                .build(),
        )
        .append(
            Element::builder("configure", ns::PUBSUB)
                .append(config)
                .build(),
        )
        .build()
}

/// Owner request: configure `node`.
pub fn configure(node: &str, config: Element) -> Element {
    pubsub(
        ns::PUBSUB_OWNER,
        Element::builder("configure", ns::PUBSUB_OWNER)
            .a("node", node)
            .append(config)
            .build(),
    )
}

/// Owner request: the node's configuration form.
pub fn configure_get(node: &str) -> Element {
    pubsub(
        ns::PUBSUB_OWNER,
        Element::builder("configure", ns::PUBSUB_OWNER)
            .a("node", node)
            .build(),
    )
}

/// The item capacity a node configuration form states: `pubsub#max_items`
/// as a number, or for `max` the top of the range its validation allows.
pub fn max_items(form: &Element) -> Option<usize> {
    let field = form
        .children()
        .find(|f| f.name() == "field" && f.attr("var") == Some("pubsub#max_items"))?;
    let value = field
        .children()
        .find(|v| v.name() == "value")
        .map(|v| v.text())?;
    if let Ok(n) = value.trim().parse() {
        return Some(n);
    }
    field
        .children()
        .filter(|v| v.name() == "validate")
        .flat_map(|v| v.children())
        .find(|r| r.name() == "range")
        .and_then(|r| r.attr("max"))
        .and_then(|m| m.parse().ok())
}

/// The fields of a node configuration form (as the server reports it) that
/// differ from what pubpresence configured: `(var, have, want)`. Booleans
/// compare as booleans (`1` = `true`); a wanted `max` for
/// `pubsub#max_items` is met by `max` or by any number of at least
/// `max_floor` (what the server reported as "max" at start-up), since servers
/// report it either way. Fields the server does not report are not drift.
pub fn config_drift(
    form: &Element,
    want: &[(&str, String)],
    max_floor: Option<usize>,
) -> Vec<(String, String, String)> {
    let truthy = |v: &str| matches!(v.trim(), "1" | "true");
    let mut drift = Vec::new();
    for (var, wanted) in want {
        let Some(have) = forms::value(form, var) else {
            continue;
        };
        let same = match (var.strip_prefix("pubsub#"), wanted.as_str()) {
            (Some("max_items"), "max") => {
                have.trim() == "max"
                    || match (have.trim().parse::<usize>(), max_floor) {
                        (Ok(n), Some(floor)) => n >= floor,
                        // Nothing to compare with: not drift.
                        (_, None) => true,
                        (Err(_), Some(_)) => false,
                    }
            }
            (
                Some("persist_items" | "deliver_payloads" | "notify_retract" | "notify_delete"),
                w,
            ) => truthy(&have) == truthy(w),
            (_, w) => have.trim() == w,
        };
        if !same {
            drift.push((var.to_string(), have, wanted.clone()));
        }
    }
    drift
}

/// Owner request: delete `node` and its items.
pub fn delete(node: &str) -> Element {
    pubsub(
        ns::PUBSUB_OWNER,
        Element::builder("delete", ns::PUBSUB_OWNER)
            .a("node", node)
            .build(),
    )
}

/// Requests every item of `node`.
pub fn items(node: &str) -> Element {
    pubsub(
        ns::PUBSUB,
        Element::builder("items", ns::PUBSUB)
            .a("node", node)
            .build(),
    )
}

/// Requests at most `max` items of `node`, after item `after` (XEP-0059
/// paging of an items request). A service without paging (Prosody) ignores
/// the `<set/>` and answers as to [`items`].
pub fn items_page(node: &str, max: usize, after: Option<&str>) -> Element {
    Element::builder("pubsub", ns::PUBSUB)
        .append(
            Element::builder("items", ns::PUBSUB)
                .a("node", node)
                .build(),
        )
        .append(Element::from(xmpp_parsers::rsm::SetQuery {
            max: Some(max),
            after: after.map(str::to_string),
            before: None,
            index: None,
        }))
        .build()
}

/// The paging part of an items answer: `None` when the service does not
/// page (no `<set/>`: the answer holds what a plain request gets).
pub fn parse_page(iq: &Element) -> Option<xmpp_parsers::rsm::SetResult> {
    iq.children()
        .filter(|c| c.is("pubsub", ns::PUBSUB))
        .flat_map(|p| p.children())
        .find(|c| c.is("set", xmpp_parsers::ns::RSM))
        .and_then(|set| xmpp_parsers::rsm::SetResult::try_from(set.clone()).ok())
}

/// Subscribes `jid` to `node`.
pub fn subscribe(node: &str, jid: &str) -> Element {
    pubsub(
        ns::PUBSUB,
        Element::builder("subscribe", ns::PUBSUB)
            .a("node", node)
            .a("jid", jid)
            .build(),
    )
}

/// Owner request: the node's affiliations.
pub fn affiliations_get(node: &str) -> Element {
    pubsub(
        ns::PUBSUB_OWNER,
        Element::builder("affiliations", ns::PUBSUB_OWNER)
            .a("node", node)
            .build(),
    )
}

/// Owner request: set affiliations (`member`, `none`, ...).
pub fn affiliations_set(node: &str, changes: &[(String, &str)]) -> Element {
    let mut b = Element::builder("affiliations", ns::PUBSUB_OWNER).a("node", node);
    for (jid, aff) in changes {
        b = b.append(
            Element::builder("affiliation", ns::PUBSUB_OWNER)
                .a("jid", jid.as_str())
                .a("affiliation", *aff)
                .build(),
        );
    }
    pubsub(ns::PUBSUB_OWNER, b.build())
}

/// (jid, affiliation) pairs from an affiliations result.
pub fn parse_affiliations(iq: &Element) -> Vec<(String, String)> {
    iq.children()
        .filter(|c| c.name() == "pubsub")
        .flat_map(|p| p.children().filter(|c| c.name() == "affiliations"))
        .flat_map(|a| a.children().filter(|c| c.name() == "affiliation"))
        .filter_map(|a| {
            Some((
                a.attr("jid")?.to_string(),
                a.attr("affiliation")?.to_string(),
            ))
        })
        .collect()
}

/// (item id, first payload child) pairs from an items result.
pub fn parse_items(iq: &Element) -> Vec<(String, Option<Element>)> {
    iq.children()
        .filter(|c| c.is("pubsub", ns::PUBSUB))
        .flat_map(|p| p.children().filter(|c| c.name() == "items"))
        .flat_map(|i| i.children().filter(|c| c.name() == "item"))
        .map(|item| {
            (
                item.attr("id").unwrap_or_default().to_string(),
                item.children().next().cloned(),
            )
        })
        .collect()
}

/// What a pubsub notification message says about one node.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Items published: (id, payload).
    Items {
        node: String,
        items: Vec<(String, Option<Element>)>,
        retracts: Vec<String>,
    },
    /// The node was purged (all items gone).
    Purge { node: String },
    /// The node was deleted.
    Delete { node: String },
}

/// Reads the pubsub events carried by a `<message/>` (none if it is not one).
pub fn parse_event(msg: &Element) -> Vec<Event> {
    let mut out = Vec::new();
    for ev in msg.children().filter(|c| c.is("event", ns::PUBSUB_EVENT)) {
        for c in ev.children() {
            let node = c.attr("node").unwrap_or_default().to_string();
            match c.name() {
                "items" => {
                    let mut items = Vec::new();
                    let mut retracts = Vec::new();
                    for i in c.children() {
                        let id = i.attr("id").unwrap_or_default().to_string();
                        match i.name() {
                            "item" => items.push((id, i.children().next().cloned())),
                            "retract" => retracts.push(id),
                            _ => {}
                        }
                    }
                    out.push(Event::Items {
                        node,
                        items,
                        retracts,
                    });
                }
                "purge" => out.push(Event::Purge { node }),
                "delete" => out.push(Event::Delete { node }),
                _ => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_asked_and_read() {
        let ask = items_page("presence/active", 500, Some("a@b/c"));
        let set = ask
            .get_child("set", xmpp_parsers::ns::RSM)
            .expect("a set beside items");
        assert_eq!(
            set.get_child("max", xmpp_parsers::ns::RSM)
                .map(|m| m.text()),
            Some("500".into())
        );
        assert_eq!(
            set.get_child("after", xmpp_parsers::ns::RSM)
                .map(|m| m.text()),
            Some("a@b/c".into())
        );
        assert_eq!(
            ask.get_child("items", ns::PUBSUB)
                .and_then(|i| i.attr("node")),
            Some("presence/active")
        );
        let answer: Element = "<iq xmlns='jabber:client' type='result'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
            <items node='n'><item id='x'/></items>\
            <set xmlns='http://jabber.org/protocol/rsm'><first index='0'>x</first><last>x</last><count>7</count></set>\
            </pubsub></iq>"
            .parse()
            .expect("xml");
        let page = parse_page(&answer).expect("a page");
        assert_eq!((page.last.as_deref(), page.count), (Some("x"), Some(7)));
        let plain: Element = "<iq xmlns='jabber:client' type='result'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
            <items node='n'><item id='x'/></items></pubsub></iq>"
            .parse()
            .expect("xml");
        assert!(parse_page(&plain).is_none());
    }

    fn form(fields: &[(&str, &str)]) -> Element {
        let f: Vec<(&str, Vec<String>)> = fields
            .iter()
            .map(|(k, v)| (*k, vec![v.to_string()]))
            .collect();
        forms::build("form", Some(NODE_CONFIG), &f)
    }

    #[test]
    fn drift_compares_booleans_and_max_leniently() {
        let want = vec![
            ("pubsub#access_model", "whitelist".to_string()),
            ("pubsub#persist_items", "1".to_string()),
            ("pubsub#max_items", "max".to_string()),
            ("pubsub#notify_retract", "1".to_string()),
        ];
        let same = form(&[
            ("pubsub#access_model", "whitelist"),
            ("pubsub#persist_items", "true"),
            ("pubsub#max_items", "100000"),
        ]);
        assert!(config_drift(&same, &want, Some(100000)).is_empty());
        let as_max = form(&[("pubsub#max_items", "max")]);
        assert!(config_drift(&as_max, &want, Some(100000)).is_empty());
        let changed = form(&[
            ("pubsub#access_model", "open"),
            ("pubsub#persist_items", "false"),
            ("pubsub#max_items", "10"),
        ]);
        assert_eq!(
            config_drift(&changed, &want, Some(100000)),
            vec![
                (
                    "pubsub#access_model".into(),
                    "open".into(),
                    "whitelist".into()
                ),
                ("pubsub#persist_items".into(), "false".into(), "1".into()),
                ("pubsub#max_items".into(), "10".into(), "max".into()),
            ]
        );
        // Without a floor a number is accepted for "max".
        assert_eq!(config_drift(&changed, &want, None).len(), 2);
    }

    #[test]
    fn publish_shape() {
        let p = publish(
            "presence/active",
            Some("a@l/r"),
            Element::bare("user", ns::USER),
        );
        assert_eq!(
            String::from(&p),
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='presence/active'>\
             <item id='a@l/r'><user xmlns='urn:pubpresence:0'/></item></publish></pubsub>"
        );
    }

    #[test]
    fn event_items_and_retracts() {
        let m: Element = "<message xmlns='jabber:client' from='pubsub.l'>\
            <event xmlns='http://jabber.org/protocol/pubsub#event'>\
            <items node='presence/active'><item id='a@l/r'><user xmlns='urn:pubpresence:0'/></item>\
            <retract id='b@l/r'/></items></event></message>"
            .parse()
            .unwrap();
        let ev = parse_event(&m);
        assert_eq!(ev.len(), 1);
        match &ev[0] {
            Event::Items {
                node,
                items,
                retracts,
            } => {
                assert_eq!(node, "presence/active");
                assert_eq!(items[0].0, "a@l/r");
                assert_eq!(items[0].1.as_ref().unwrap().name(), "user");
                assert_eq!(retracts, &vec!["b@l/r".to_string()]);
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn capacity_from_the_config_form() {
        let f: Element = "<x xmlns='jabber:x:data' type='form'><field var='pubsub#max_items'>\
            <validate xmlns='http://jabber.org/protocol/xdata-validate' datatype='pubsub:integer-or-max'>\
            <range min='1' max='256'/></validate><value>max</value></field></x>"
            .parse()
            .unwrap();
        assert_eq!(max_items(&f), Some(256));
        let f: Element =
            "<x xmlns='jabber:x:data'><field var='pubsub#max_items'><value>10</value></field></x>"
                .parse()
                .unwrap();
        assert_eq!(max_items(&f), Some(10));
        let f: Element = "<x xmlns='jabber:x:data'/>".parse().unwrap();
        assert_eq!(max_items(&f), None);
    }

    #[test]
    fn items_result() {
        let iq: Element = "<iq xmlns='jabber:client' type='result'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
            <items node='n'><item id='1'><x xmlns='y'/></item><item id='2'/></items></pubsub></iq>"
            .parse()
            .unwrap();
        let items = parse_items(&iq);
        assert_eq!(items.len(), 2);
        assert!(items[1].1.is_none());
    }
}
