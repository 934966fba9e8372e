//! Checks of keys that hold a JID: a domain JID (`jid`, `pubsub`, `domain`)
//! or a bare JID (`access.members`, `privacy.hide`, the accounts of
//! `[watch]` and `[standby]`). Each error names the key and gives an example.

use xmpp_parsers::jid::BareJid;

use super::ConfigError;

/// A JID without node and resource, such as `pubsub.example.org`.
pub(super) fn domain_jid(key: &str, value: &str) -> Result<BareJid, ConfigError> {
    let jid = BareJid::new(value).map_err(|e| {
        ConfigError::new(
            key,
            format!("{value:?} is not a domain JID such as \"pubsub.example.org\" ({e})"),
        )
    })?;
    if jid.node().is_some() {
        return Err(ConfigError::new(
            key,
            format!("{value:?} is not a domain JID such as \"pubsub.example.org\" (no user@ part)"),
        ));
    }
    Ok(jid)
}

/// A bare JID (`user@domain`, or with `need_node == false` also `domain`).
pub(super) fn bare_jid(key: &str, value: &str, need_node: bool) -> Result<BareJid, ConfigError> {
    let jid = BareJid::new(value).map_err(|e| {
        ConfigError::new(
            key,
            format!("{value:?} is not a bare JID such as \"user@example.org\" ({e})"),
        )
    })?;
    if need_node && jid.node().is_none() {
        return Err(ConfigError::new(
            key,
            format!("{value:?} is not a user account such as \"user@example.org\""),
        ));
    }
    Ok(jid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_and_bare_jids() {
        assert_eq!(
            domain_jid("pubsub", "pubsub.example.org").map(|j| j.to_string()),
            Ok("pubsub.example.org".to_string())
        );
        for bad in ["a@pubsub.example.org", "pubsub.example.org/r", "@x", ""] {
            let e = domain_jid("pubsub", bad).expect_err(bad);
            assert_eq!(e.key(), Some("pubsub"), "{bad}: {e}");
            assert!(e.message().contains("not a domain JID"), "{bad}: {e}");
        }
        assert!(bare_jid("k", "example.org", false).is_ok());
        assert!(bare_jid("k", "a@example.org", true).is_ok());
        let e = bare_jid("k", "example.org", true).expect_err("no node");
        assert!(e.message().contains("not a user account"), "{e}");
        let e = bare_jid("k", "a@b/c", false).expect_err("resource");
        assert!(e.message().contains("not a bare JID"), "{e}");
    }
}
