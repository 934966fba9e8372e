//! Property tests for everything the component parses from the network
//!: user-stats answers, online-users listings, presences, user
//! items and status forms. Whatever arrives, parsing returns a value or a
//! refusal, never panics, and what pubpresence writes reads back the same.

use proptest::prelude::*;
use pubpresence::minidom::Element;
use pubpresence::wire::{adhoc, presence, status, time, user, xml_escape};

/// Text that is safe inside an XML attribute or text node once escaped.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,40}",
        "[0-9a-fA-F:.\\[\\]%]{0,45}",
        Just(String::new()),
        Just("::ffff:10.0.0.1:5222".to_string()),
    ]
}

fn values(vs: &[String]) -> String {
    vs.iter()
        .map(|v| format!("<value>{}</value>", xml_escape(v)))
        .collect()
}

proptest! {
    #[test]
    fn user_stats_never_panics_and_keeps_resources(
        resources in proptest::collection::vec(text(), 0..6),
        ips in proptest::collection::vec(text(), 0..6),
        form_type in prop_oneof![Just("result"), Just("form"), Just("weird")],
    ) {
        let xml = format!(
            "<x xmlns='jabber:x:data' type='{form_type}'><field var='onlineresources'>{}</field>\
             <field var='ipaddresses'>{}</field></x>",
            values(&resources), values(&ips)
        );
        let Ok(form) = xml.parse::<Element>() else { return Ok(()) };
        let sessions = adhoc::parse_user_stats(&form);
        let want: Vec<&String> = resources.iter().filter(|r| !r.is_empty()).collect();
        prop_assert_eq!(sessions.len(), want.len());
        for s in &sessions {
            // Whatever the input, an address is either empty or a valid IP.
            prop_assert!(s.ip.is_empty() || s.ip.parse::<std::net::IpAddr>().is_ok(), "{:?}", s.ip);
        }
    }

    #[test]
    fn addresses_normalise_to_ip_or_nothing(raw in text(), with_port in any::<bool>()) {
        let ip = adhoc::normalise_ip(&raw, with_port);
        prop_assert!(ip.is_empty() || ip.parse::<std::net::IpAddr>().is_ok());
    }

    #[test]
    fn real_addresses_survive_with_and_without_port(
        v6 in any::<std::net::Ipv6Addr>(),
        v4 in any::<std::net::Ipv4Addr>(),
        port in 1u16..,
    ) {
        let v6s = v6.to_ipv4_mapped().map(|m| m.to_string()).unwrap_or_else(|| v6.to_string());
        prop_assert_eq!(adhoc::normalise_ip(&v6.to_string(), false), v6s.clone());
        prop_assert_eq!(adhoc::normalise_ip(&format!("[{v6}]:{port}"), false), v6s.clone());
        prop_assert_eq!(adhoc::normalise_ip(&format!("{v6}:{port}"), true), v6s);
        prop_assert_eq!(adhoc::normalise_ip(&v4.to_string(), false), v4.to_string());
        prop_assert_eq!(adhoc::normalise_ip(&format!("{v4}:{port}"), true), v4.to_string());
    }

    #[test]
    fn online_listing_never_panics(lines in proptest::collection::vec(
        prop_oneof![text(), text().prop_map(|t| format!(" - {t}")), text().prop_map(|t| format!(" - r: away(0), IP: [{t}]"))],
        0..10,
    )) {
        let xml = format!("<x xmlns='jabber:x:data'><field var='onlineuserjids'>{}</field></x>", values(&lines));
        let Ok(form) = xml.parse::<Element>() else { return Ok(()) };
        for (_, sessions) in adhoc::parse_online_sessions(&form) {
            for s in sessions {
                if let Some(ip) = s.ip {
                    prop_assert!(ip.parse::<std::net::IpAddr>().is_ok());
                }
            }
        }
    }

    #[test]
    fn presences_parse_or_refuse(
        from in text(),
        kind in proptest::option::of(text()),
        show in proptest::option::of(text()),
        extra in text(),
    ) {
        let mut xml = format!("<presence xmlns='jabber:component:accept' from='{}'", xml_escape(&from));
        if let Some(k) = &kind {
            xml.push_str(&format!(" type='{}'", xml_escape(k)));
        }
        xml.push('>');
        if let Some(s) = &show {
            xml.push_str(&format!("<show>{}</show>", xml_escape(s)));
        }
        xml.push_str(&format!("<status>{}</status><x xmlns='urn:x'><y>{}</y></x></presence>", xml_escape(&extra), xml_escape(&extra)));
        let Ok(el) = xml.parse::<Element>() else { return Ok(()) };
        match presence::parse(&el) {
            Ok(p) => prop_assert!(!p.from.to_string().is_empty()),
            Err(e) => prop_assert!(e.to_string().len() < 200, "refusals stay short"),
        }
    }

    #[test]
    fn user_items_round_trip(
        node in "[a-z]{1,10}", res in "[a-zA-Z0-9 ]{1,12}", ip in any::<std::net::IpAddr>(),
        status in prop_oneof![Just("online"), Just("chat"), Just("away"), Just("xa"), Just("dnd"), Just("offline")],
        secs in 0i64..4_000_000_000,
    ) {
        let item = user::UserItem {
            fulljid: format!("{node}@example.org/{res}"),
            name: format!("{node}@example.org"),
            status: user::Status::parse(status).unwrap(),
            ip: ip.to_string(),
            since: chrono::DateTime::from_timestamp(secs, 0).unwrap(),
        };
        let xml = String::from(&item.to_element());
        let back = user::UserItem::from_element(&xml.parse::<Element>().unwrap());
        prop_assert_eq!(back, Some(item));
    }

    #[test]
    fn status_forms_round_trip(st in 0..3u8, inst in proptest::option::of("[a-z0-9-]{1,20}")) {
        let st = [status::ServiceStatus::Init, status::ServiceStatus::Online, status::ServiceStatus::Offline][st as usize];
        let el = status::to_element(st, inst.as_deref());
        prop_assert_eq!(status::from_element(&el), Some((st, inst)));
    }

    #[test]
    fn timestamps_read_or_refuse(s in "\\PC{0,30}") {
        if let Some(t) = time::parse(&s) {
            prop_assert_eq!(time::parse(&time::format(&t)), Some(t));
        }
    }
}
