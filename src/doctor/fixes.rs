//! The server software `doctor` found, and the configuration lines that fix
//! each problem on it (the README's "Configuring Prosody" and "Configuring
//! ejabberd" give the same lines in full).

/// The server's software, from its XEP-0092 answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Software {
    Prosody {
        version: String,
        major: u32,
    },
    Ejabberd {
        version: String,
        major: u32,
        minor: u32,
    },
    /// The server did not say, or said something else.
    Unknown,
}

impl Software {
    /// From `name version` as the server reports it (`Prosody 13.0.1`,
    /// `ejabberd 24.12.0`).
    pub fn parse(name_version: &str) -> Software {
        let mut words = name_version.split_whitespace();
        let name = words.next().unwrap_or_default().to_ascii_lowercase();
        let version = words.next().unwrap_or_default().to_string();
        let mut nums = version
            .split(|c: char| !c.is_ascii_digit())
            .map(|n| n.parse::<u32>().ok());
        let major = nums.next().flatten();
        let minor = nums.next().flatten().unwrap_or(0);
        match (name.as_str(), major) {
            ("prosody", Some(major)) => Software::Prosody { version, major },
            ("ejabberd", Some(major)) => Software::Ejabberd {
                version,
                major,
                minor,
            },
            _ => Software::Unknown,
        }
    }

    pub fn is_prosody(&self) -> bool {
        matches!(self, Software::Prosody { .. })
    }

    pub fn is_ejabberd(&self) -> bool {
        matches!(self, Software::Ejabberd { .. })
    }

    /// ejabberd 24.10 and later: mod_privilege drops a privileged
    /// component's plain requests (README, "XEP-0356 on ejabberd 24.10 and
    /// later").
    pub fn drops_plain_privileged(&self) -> bool {
        matches!(self, Software::Ejabberd { major, minor, .. } if (*major, *minor) >= (24, 10))
    }

    /// For the lines that introduce a fix: `Prosody 13`, `ejabberd 24.12`.
    pub fn label(&self) -> String {
        match self {
            Software::Prosody { version, .. } => format!("Prosody {version}"),
            Software::Ejabberd { version, .. } => format!("ejabberd {version}"),
            Software::Unknown => "the server".into(),
        }
    }
}

/// What the fixes need to name.
pub struct Names<'a> {
    pub component: &'a str,
    pub domain: &'a str,
    pub pubsub: &'a str,
}

fn prosody_lines(lines: &[&str]) -> Vec<String> {
    let mut out = vec!["Prosody, prosody.cfg.lua:".to_string()];
    out.extend(lines.iter().map(|l| format!("    {l}")));
    out
}

fn ejabberd_lines(lines: &[&str]) -> Vec<String> {
    let mut out = vec!["ejabberd, ejabberd.yml:".to_string()];
    out.extend(lines.iter().map(|l| format!("    {l}")));
    out
}

/// One JID in an ejabberd ACL's `server:` list.
fn acl_entry(jid: &str) -> String {
    format!("      - \"{jid}\"")
}

/// The lines for the software found; both servers' when it is unknown.
fn pick(sw: &Software, prosody: Vec<String>, ejabberd: Vec<String>) -> Vec<String> {
    match sw {
        Software::Prosody { .. } => prosody,
        Software::Ejabberd { .. } => ejabberd,
        Software::Unknown => prosody.into_iter().chain(ejabberd).collect(),
    }
}

/// The component listener and its secret.
pub fn connection(sw: &Software, n: &Names) -> Vec<String> {
    let c = n.component;
    let mut fix = vec![format!(
        "the secret must be the same in pubpresence's config (`secret`, `secret_file` or \
         PUBPRESENCE_SECRET) and in the server's component definition:"
    )];
    fix.extend(pick(
        sw,
        prosody_lines(&[
            &format!("Component \"{c}\""),
            "    component_secret = \"the same secret\"",
            "-- and a listener: component_ports = { 5347 }, component_interfaces = { \"127.0.0.1\" }",
        ]),
        ejabberd_lines(&[
            "listen:",
            "  - port: 5347",
            "    ip: \"127.0.0.1\"",
            "    module: ejabberd_service",
            "    hosts:",
            &format!("      \"{c}\":"),
            "        password: \"the same secret\"",
        ]),
    ));
    fix
}

/// The server's version (XEP-0092).
pub fn version(sw: &Software) -> Vec<String> {
    pick(
        sw,
        prosody_lines(&["modules_enabled = { --[[ ... ]] \"version\" }"]),
        ejabberd_lines(&["modules:", "  mod_version: {}"]),
    )
}

/// Admin rights: the XEP-0133 session listing and user-stats.
pub fn admin(sw: &Software, n: &Names) -> Vec<String> {
    let c = n.component;
    pick(
        sw,
        prosody_lines(&[
            "-- global section",
            &format!("admins = {{ \"{c}\" }}"),
            "modules_enabled = { --[[ ... ]] \"adhoc\"; \"admin_adhoc\" }",
        ]),
        ejabberd_lines(&[
            "acl:",
            "  admin:",
            "    server:",
            &acl_entry(c),
            "access_rules:",
            "  configure:",
            "    allow: admin",
            "modules:",
            "  mod_adhoc: {}",
            "  mod_configure: {}",
            "  mod_last: {}",
        ]),
    )
}

/// The pubsub service and the right to create and configure nodes on it.
pub fn pubsub_rights(sw: &Software, n: &Names) -> Vec<String> {
    let (c, p) = (n.component, n.pubsub);
    let mut fix = vec![format!(
        "`pubsub = \"{p}\"` must be a pubsub service on which {c} may create and configure nodes:"
    )];
    fix.extend(pick(
        sw,
        prosody_lines(&[
            &format!("admins = {{ \"{c}\" }}"),
            &format!("Component \"{p}\" \"pubsub\""),
            "    storage = \"sql\"",
        ]),
        ejabberd_lines(&[
            "acl:",
            "  admin:",
            "    server:",
            &acl_entry(c),
            "access_rules:",
            "  pubsub_createnode:",
            "    allow: admin",
            "modules:",
            "  mod_pubsub:",
            "    access_createnode: pubsub_createnode",
            &format!("    host: \"{p}\""),
        ]),
    ));
    fix
}

/// Both item caps (`need`: what the nodes must hold now, with headroom).
pub fn capacity(sw: &Software, n: &Names, need: usize) -> Vec<String> {
    let cap = need.max(100_000).to_string();
    pick(
        sw,
        prosody_lines(&[
            &format!("Component \"{}\" \"pubsub\"", n.pubsub),
            &format!(
                "    pubsub_max_items = {cap}            -- at least the connections you expect"
            ),
            &format!("    storage_archive_item_limit = {cap}  -- the same"),
        ]),
        ejabberd_lines(&[
            "modules:",
            "  mod_pubsub:",
            &format!("    max_items_node: {cap}"),
        ]),
    )
}

/// A store that is slow (flat files) or loses items (memory).
pub fn storage(sw: &Software, n: &Names) -> Vec<String> {
    pick(
        sw,
        prosody_lines(&[
            &format!("Component \"{}\" \"pubsub\"", n.pubsub),
            "    storage = \"sql\"   -- never the default flat files, never \"memory\"",
            "    sql = { driver = \"SQLite3\", database = \"pubsub.sqlite\" }  -- apt-get install lua-dbi-sqlite3",
        ]),
        ejabberd_lines(&[
            "# mod_pubsub stores items in ejabberd's database: keep the default (mnesia) or sql",
            "modules:",
            "  mod_pubsub:",
            "    db_type: sql",
        ]),
    )
}

/// Presence permission (XEP-0356), the alternative to roster subscriptions.
pub fn presence_route(sw: &Software, n: &Names) -> Vec<String> {
    let (c, d) = (n.component, n.domain);
    let mut fix = vec![format!(
        "either users add {c} to their roster (the component approves at once), or the server \
         grants it every user's presence (XEP-0356):"
    )];
    fix.extend(pick(
        sw,
        prosody_lines(&[
            "modules_enabled = { --[[ ... ]] \"privilege\" }   -- prosody-modules",
            &format!("VirtualHost \"{d}\""),
            &format!(
                "    privileged_entities = {{ [\"{c}\"] = {{ presence = \"managed_entity\"; roster = \"both\" }} }}"
            ),
            &format!("Component \"{c}\""),
            "    modules_enabled = { \"privilege\" }",
        ]),
        ejabberd_lines(&[
            "modules:",
            "  mod_privilege:",
            "    presence:",
            "      managed_entity: pubpresence_privileges",
            "access_rules:",
            "  pubpresence_privileges:",
            "    allow: pubpresence",
            "acl:",
            "  pubpresence:",
            "    server:",
            &acl_entry(c),
        ]),
    ));
    fix
}

/// ejabberd 24.10 and later with XEP-0356: `privileged_as` and the `iq`
/// grant (README, "XEP-0356 on ejabberd 24.10 and later").
pub fn privileged_iq(n: &Names, missing: &[(&str, &str)]) -> Vec<String> {
    let mut fix = vec![
        "pubpresence's config:".to_string(),
        format!("    privileged_as = \"pubpresence@{}\"", n.domain),
        "ejabberd, ejabberd.yml (that JID in acl admin, and each namespace granted):".to_string(),
        "    modules:".to_string(),
        "      mod_privilege:".to_string(),
        "        iq:".to_string(),
    ];
    for (ns, _) in missing {
        fix.push(format!("          \"{ns}\":"));
        fix.push("            both: pubpresence_privileges".to_string());
    }
    fix
}

/// XEP-0202 entity time, for the clock check.
pub fn time(sw: &Software) -> Vec<String> {
    pick(
        sw,
        prosody_lines(&["modules_enabled = { --[[ ... ]] \"time\" }"]),
        ejabberd_lines(&["modules:", "  mod_time: {}"]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn software_from_version_answers() {
        assert_eq!(
            Software::parse("Prosody 13.0.1"),
            Software::Prosody {
                version: "13.0.1".into(),
                major: 13
            }
        );
        let e = Software::parse("ejabberd 24.12.0");
        assert!(e.is_ejabberd() && e.drops_plain_privileged(), "{e:?}");
        let e = Software::parse("ejabberd 23.01");
        assert!(e.is_ejabberd() && !e.drops_plain_privileged(), "{e:?}");
        assert_eq!(Software::parse("Openfire 4.7"), Software::Unknown);
        assert_eq!(Software::parse(""), Software::Unknown);
        assert_eq!(Software::parse("Prosody trunk"), Software::Unknown);
    }

    #[test]
    fn fixes_name_the_server_found() {
        let n = Names {
            component: "pp.example.org",
            domain: "example.org",
            pubsub: "presence.example.org",
        };
        let prosody = Software::parse("Prosody 0.12.3");
        let fix = admin(&prosody, &n);
        assert_eq!(
            fix,
            vec![
                "Prosody, prosody.cfg.lua:",
                "    -- global section",
                "    admins = { \"pp.example.org\" }",
                "    modules_enabled = { --[[ ... ]] \"adhoc\"; \"admin_adhoc\" }",
            ]
        );
        let both = admin(&Software::Unknown, &n);
        assert!(both.iter().any(|l| l.starts_with("Prosody")), "{both:?}");
        assert!(both.iter().any(|l| l.starts_with("ejabberd")), "{both:?}");
        let cap = capacity(&Software::parse("ejabberd 24.12"), &n, 5);
        assert_eq!(
            cap.last().map(String::as_str),
            Some("        max_items_node: 100000")
        );
    }
}
