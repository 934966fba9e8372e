//! XEP-0030 service discovery: the one request used is ejabberd's
//! `online users` items node, which lists every session's full JID.

use super::{ns, Attr};
use xmpp_parsers::minidom::Element;

pub const ONLINE_USERS_NODE: &str = "online users";

/// A disco#items query, optionally on a node.
pub fn items(node: Option<&str>) -> Element {
    let mut b = Element::builder("query", ns::DISCO_ITEMS);
    if let Some(n) = node {
        b = b.a("node", n);
    }
    b.build()
}

/// The `jid` attributes of a disco#items result.
pub fn parse_items(iq: &Element) -> Vec<String> {
    iq.children()
        .filter(|c| c.is("query", ns::DISCO_ITEMS))
        .flat_map(|q| q.children().filter(|c| c.name() == "item"))
        .filter_map(|i| i.attr("jid").map(str::to_string))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejabberd_online_users() {
        let iq: Element = "<iq xmlns='jabber:component:accept' type='result'>\
            <query xmlns='http://jabber.org/protocol/disco#items' node='online users'>\
            <item name='alice@localhost' jid='alice@localhost/phone'/>\
            <item name='bob@localhost' jid='bob@localhost/x'/></query></iq>"
            .parse()
            .unwrap();
        assert_eq!(
            parse_items(&iq),
            vec!["alice@localhost/phone", "bob@localhost/x"]
        );
    }
}
