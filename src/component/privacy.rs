//! What the operator allows to be published. Applied where data
//! enters the tracker, so nothing it would not publish is ever held there.

use crate::config::IpMode;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Debug, Clone, Default)]
pub struct Privacy {
    pub ip: IpMode,
    /// Bare JIDs never published.
    pub hide: HashSet<String>,
}

impl Privacy {
    pub fn hidden(&self, bare: &str) -> bool {
        self.hide.contains(bare)
    }

    /// The address as published under this mode ("" for none).
    pub fn ip(&self, ip: &str) -> String {
        match self.ip {
            IpMode::Full => ip.to_string(),
            IpMode::None => String::new(),
            IpMode::Masked => mask(ip),
        }
    }
}

/// The network part only: IPv4 to its /24, IPv6 to its /48, canonical form.
/// IPv4-mapped IPv6 is masked as the IPv4 address it is; a zone id is
/// dropped. Anything unreadable gives "" (never the raw value).
pub fn mask(ip: &str) -> String {
    let ip = ip.trim().trim_start_matches('[').trim_end_matches(']');
    let ip = ip.split('%').next().unwrap_or_default();
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => mask_v4(v4).to_string(),
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => mask_v4(v4).to_string(),
            None => {
                let s = v6.segments();
                Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0).to_string()
            }
        },
        Err(_) => String::new(),
    }
}

fn mask_v4(v4: Ipv4Addr) -> Ipv4Addr {
    let o = v4.octets();
    Ipv4Addr::new(o[0], o[1], o[2], 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_both_families() {
        assert_eq!(mask("192.0.2.77"), "192.0.2.0");
        assert_eq!(mask("2001:db8:1:2::5"), "2001:db8:1::");
        assert_eq!(
            mask("2001:0DB8:0001:0002:0000:0000:0000:0005"),
            "2001:db8:1::"
        );
        assert_eq!(mask("::1"), "::");
        assert_eq!(mask("fe80::1:2%eth0"), "fe80::");
        assert_eq!(mask("::ffff:198.51.100.23"), "198.51.100.0");
        assert_eq!(mask("[2001:db8:aa:bb::1]"), "2001:db8:aa::");
        assert_eq!(mask(""), "");
        assert_eq!(mask("not-an-ip"), "");
    }

    #[test]
    fn modes() {
        let mut p = Privacy::default();
        assert_eq!(p.ip("192.0.2.77"), "192.0.2.77");
        p.ip = IpMode::Masked;
        assert_eq!(p.ip("192.0.2.77"), "192.0.2.0");
        p.ip = IpMode::None;
        assert_eq!(p.ip("192.0.2.77"), "");
        p.hide.insert("ceo@example.org".into());
        assert!(p.hidden("ceo@example.org"));
        assert!(!p.hidden("alice@example.org"));
    }
}
