//! The status node's payload: a data form (docs/protocol.md, "Status").

use super::{forms, ns, time};
use xmpp_parsers::minidom::Element;

pub const STATUS_VAR: &str = "pubpresence#status";
pub const INSTANCE_VAR: &str = "pubpresence#instance";
/// On `offline` only: the copy of active the stopping instance saved
/// (docs/protocol.md, "Status"). Readers ignore it.
pub const SAVED_VAR: &str = "pubpresence#saved";
/// On `offline` only: when the stopping instance stopped reading presence
/// (docs/protocol.md, "Status"). Readers ignore it.
pub const STOPPED_VAR: &str = "pubpresence#stopped";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceStatus {
    /// Active is being rebuilt: not up to date.
    Init,
    /// Active matches the server.
    Online,
    /// Nobody maintains active (clean shutdown).
    Offline,
}

impl ServiceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceStatus::Init => "init",
            ServiceStatus::Online => "online",
            ServiceStatus::Offline => "offline",
        }
    }

    pub fn parse(s: &str) -> Option<ServiceStatus> {
        match s.trim() {
            "init" => Some(ServiceStatus::Init),
            "online" => Some(ServiceStatus::Online),
            "offline" => Some(ServiceStatus::Offline),
            _ => None,
        }
    }
}

/// The status form, with the instance field where one is configured.
pub fn to_element(status: ServiceStatus, instance: Option<&str>) -> Element {
    form(status, instance, &[])
}

/// `offline` as a clean stop publishes it: when it stopped reading presence
/// and, where a copy of active was saved, its token.
pub fn offline(instance: Option<&str>, saved: Option<&str>, stopped: &time::Timestamp) -> Element {
    let mut extra = vec![(STOPPED_VAR, time::format(stopped))];
    if let Some(t) = saved {
        extra.push((SAVED_VAR, t.to_string()));
    }
    form(ServiceStatus::Offline, instance, &extra)
}

fn form(status: ServiceStatus, instance: Option<&str>, extra: &[(&str, String)]) -> Element {
    let mut fields = vec![(STATUS_VAR, vec![status.as_str().to_string()])];
    if let Some(i) = instance {
        fields.push((INSTANCE_VAR, vec![i.to_string()]));
    }
    for (var, value) in extra {
        fields.push((var, vec![value.clone()]));
    }
    forms::build("result", None, &fields)
}

/// A status item payload, read (docs/protocol.md, "Status").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub status: ServiceStatus,
    pub instance: Option<String>,
    /// On `offline`: the token of the copy of active saved with it.
    pub saved: Option<String>,
    /// On `offline`: when the stop that published it stopped reading presence.
    pub stopped: Option<time::Timestamp>,
}

/// Reads a status item payload, every field at once.
pub fn read(el: &Element) -> Option<Item> {
    if !el.is("x", ns::DATA) {
        return None;
    }
    Some(Item {
        status: ServiceStatus::parse(&forms::value(el, STATUS_VAR)?)?,
        instance: forms::value(el, INSTANCE_VAR),
        saved: forms::value(el, SAVED_VAR),
        stopped: forms::value(el, STOPPED_VAR).and_then(|t| time::parse(&t)),
    })
}

/// Reads a status item payload: (status, instance).
pub fn from_element(el: &Element) -> Option<(ServiceStatus, Option<String>)> {
    read(el).map(|i| (i.status, i.instance))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_the_documents_form() {
        let xml = String::from(&to_element(ServiceStatus::Init, None));
        assert_eq!(
            xml,
            "<x xmlns='jabber:x:data' type='result'><field var='pubpresence#status'>\
             <value>init</value></field></x>"
        );
        let el = to_element(ServiceStatus::Online, Some("a"));
        assert_eq!(
            from_element(&el),
            Some((ServiceStatus::Online, Some("a".into())))
        );
        assert_eq!(read(&el).and_then(|i| i.saved), None);
    }

    #[test]
    fn offline_with_its_stop_and_a_saved_copy() {
        let at = time::parse("2026-12-06T12:00:01Z").unwrap();
        let el = offline(None, Some("t-1"), &at);
        assert_eq!(
            String::from(&el),
            "<x xmlns='jabber:x:data' type='result'><field var='pubpresence#status'>\
             <value>offline</value></field><field var='pubpresence#stopped'>\
             <value>2026-12-06T12:00:01Z</value></field><field var='pubpresence#saved'>\
             <value>t-1</value></field></x>"
        );
        assert_eq!(from_element(&el), Some((ServiceStatus::Offline, None)));
        let item = read(&el).expect("readable");
        assert_eq!(item.saved.as_deref(), Some("t-1"));
        assert_eq!(item.stopped, Some(at));
        let item = read(&offline(Some("a"), None, &at)).expect("readable");
        assert_eq!(item.saved, None);
        assert_eq!(item.stopped, Some(at));
        let online = read(&to_element(ServiceStatus::Offline, None)).expect("readable");
        assert_eq!(online.stopped, None);
    }
}
