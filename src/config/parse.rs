//! TOML text to the raw [`Config`], with errors rebuilt from the error's key
//! path and line only: toml's own error text quotes the offending source
//! line, which may hold a secret, and what is left of toml's message is
//! scrubbed of anything written for a secret key. Separate from `locate`,
//! which only maps keys to lines.

use serde::Deserialize;

use super::error::one_line;
use super::locate::{clean_key, key_at_line, line_of};
use super::{Config, ConfigError};

/// Key names whose values are secret: their values never appear in errors.
const SENSITIVE_KEYS: &[&str] = &["secret", "password", "http_token"];

pub(super) fn parse_toml(s: &str) -> Result<Config, ConfigError> {
    let first = match toml::from_str::<Config>(s) {
        Ok(c) => return Ok(c),
        Err(e) => e,
    };
    let line = first.span().map(|sp| line_of(s, sp.start));
    let table = match s.parse::<toml::Table>() {
        Ok(t) => t,
        Err(e) => {
            // A syntax error: toml's message names the problem (never a value);
            // the key is read from the offending line.
            let line = e.span().map(|sp| line_of(s, sp.start)).or(line);
            let key = line.and_then(|l| key_at_line(s, l));
            let err = ConfigError {
                file: None,
                line,
                key,
                message: scrub(s, None, &one_line(e.message())),
            };
            return Err(err);
        }
    };
    // A value or key error: deserialize again from the table, which gives the
    // key path (toml prints it as a last line "in `a.b`" when it has no span).
    let second = match Config::deserialize(toml::Value::Table(table.clone())) {
        Ok(c) => return Ok(c), // cannot differ; take it anyway
        Err(e) => e,
    };
    let shown = second.to_string();
    let path = shown
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("in `")?.strip_suffix('`'))
        .map(str::to_string);
    let message = one_line(second.message());
    let join = |name: &str| match &path {
        Some(p) => format!("{p}.{name}"),
        None => name.to_string(),
    };
    let (key, message, line) =
        if let Some((name, rest)) = backticked_after(&message, "unknown field `") {
            let rest = rest.trim_start_matches([',', ' ']);
            let msg = if rest.is_empty() {
                "unknown key".to_string()
            } else {
                format!("unknown key ({rest})")
            };
            (Some(join(name)), msg, line)
        } else if let Some((name, _)) = backticked_after(&message, "missing field `") {
            (
                Some(join(name)),
                "required key is missing".to_string(),
                None,
            )
        } else {
            let sensitive = path
                .as_deref()
                .and_then(|p| p.rsplit('.').next())
                .is_some_and(|last| SENSITIVE_KEYS.contains(&last));
            let msg = if sensitive {
                if message.starts_with("invalid type") {
                    "must be a string (the value is not shown)".to_string()
                } else {
                    "invalid value (the value is not shown)".to_string()
                }
            } else {
                message
            };
            (path, msg, line)
        };
    Err(ConfigError {
        file: None,
        line,
        key,
        message: scrub(s, Some(&table), &message),
    })
}

/// For `msg` starting with `prefix` (which ends in a backtick): the name up to
/// the closing backtick, and the rest of the message.
fn backticked_after<'a>(msg: &'a str, prefix: &str) -> Option<(&'a str, &'a str)> {
    msg.strip_prefix(prefix)?.split_once('`')
}

/// Removes from `msg` anything that looks like a value written for a secret key.
fn scrub(src: &str, table: Option<&toml::Table>, msg: &str) -> String {
    let mut candidates: Vec<String> = Vec::new();
    for line in src.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let Some(last) = clean_key(k).and_then(|k| k.rsplit('.').next().map(str::to_string)) else {
            continue;
        };
        if !SENSITIVE_KEYS.contains(&last.as_str()) {
            continue;
        }
        let v = v.trim();
        candidates.push(v.to_string());
        let unquoted = match v.chars().next() {
            Some(q @ ('"' | '\'')) => {
                let rest = v.trim_start_matches(q);
                rest.split(q).next().unwrap_or(rest)
            }
            _ => v
                .split(|c: char| c.is_whitespace() || c == '#')
                .next()
                .unwrap_or(v),
        };
        candidates.push(unquoted.to_string());
    }
    if let Some(t) = table {
        let mut push = |v: Option<&toml::Value>| match v {
            Some(toml::Value::String(s)) => candidates.push(s.clone()),
            Some(other) => candidates.push(other.to_string()),
            None => {}
        };
        push(t.get("secret"));
        if let Some(toml::Value::Table(w)) = t.get("watch") {
            push(w.get("password"));
            push(w.get("http_token"));
        }
        if let Some(toml::Value::Table(sb)) = t.get("standby") {
            push(sb.get("password"));
        }
    }
    candidates.retain(|c| c.len() >= 3);
    candidates.sort_by_key(|c| std::cmp::Reverse(c.len()));
    let mut out = msg.to_string();
    for c in &candidates {
        if out.contains(c.as_str()) {
            out = out.replace(c.as_str(), "***");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{parse_err, MINIMAL, WATCH_ONLY};

    #[test]
    fn unknown_key_refused_naming_it() {
        let e = parse_err(&format!("{MINIMAL}secrt = \"x\"\n"));
        assert_eq!(e.key(), Some("secrt"));
        assert!(e.to_string().contains("secrt"), "{e}");
        assert!(e.to_string().contains("unknown key"), "{e}");
        assert_eq!(e.line(), Some(7));

        let e = parse_err(&format!("{WATCH_ONLY}colour = \"blue\"\n"));
        assert_eq!(e.key(), Some("watch.colour"));
        let e = parse_err(&format!("{MINIMAL}[nodes]\nlive = \"x\"\nextra = \"y\"\n"));
        assert_eq!(e.key(), Some("nodes.extra"));
        let e = parse_err(&format!("{MINIMAL}[standbye]\njid = \"x@y\"\n"));
        assert_eq!(e.key(), Some("standbye"));
        let e = parse_err(&format!("{MINIMAL}[privacy]\nip = \"blurred\"\n"));
        assert_eq!(e.key(), Some("privacy.ip"));
        assert!(e.to_string().contains("blurred"), "{e}");
        let e = parse_err(&format!("{MINIMAL}[access]\nmodel = \"everyone\"\n"));
        assert_eq!(e.key(), Some("access.model"));
    }

    #[test]
    fn missing_required_key_named() {
        let e = parse_err("jid = \"pubpresence.example.org\"\n");
        assert_eq!(e.key(), Some("pubsub"));
        assert!(e.to_string().starts_with("pubsub: "), "{e}");
        let e = parse_err("pubsub = \"pubsub.example.org\"\n");
        assert_eq!(e.key(), Some("jid"));
        let e = parse_err(
            "jid = \"c.example.org\"\npubsub = \"p.example.org\"\n[watch]\npassword = \"x\"\n",
        );
        assert_eq!(e.key(), Some("watch.jid"));
    }

    #[test]
    fn malformed_secret_lines_do_not_leak() {
        let head = "jid = \"c.example.org\"\npubsub = \"p.example.org\"\n";
        let bad_lines = [
            "secret = \"hunter2",
            "secret = \"hunter2\" trailing",
            "secret = hunter2",
            "secret = 'hunter2' 'again'",
            "secret = \"\"\"hunter2",
            "secret = [\"hunter2\"]",
            "secret = { value = \"hunter2\" }",
            "\"hunter2\"",
            "hunter2 hunter2",
            "secret = \"hunter2\"\nsecret = \"hunter2\"",
            "[watch]\njid = \"a@b\"\npassword = \"hunter2",
            "[watch]\njid = \"a@b\"\npassword = [\"hunter2\"]",
            "[watch]\njid = \"a@b\"\nhttp_token = { t = \"hunter2\" }",
        ];
        for bad in bad_lines {
            let e = parse_err(&format!("{head}{bad}\n"));
            let shown = e.to_string();
            assert!(
                !shown.contains("hunter2"),
                "leaked in {shown:?} for {bad:?}"
            );
            assert!(!shown.contains('\n'), "{shown:?}");
            assert!(e.line().is_some() || e.key().is_some(), "{shown}");
        }
        // integers used as a secret are not echoed either
        let e = parse_err(&format!("{head}secret = 98765432\n"));
        assert!(!e.to_string().contains("98765432"), "{e}");
        assert_eq!(e.key(), Some("secret"));
        let e = parse_err(&format!(
            "{head}[watch]\njid = \"a@b\"\npassword = 98765432\n"
        ));
        assert!(!e.to_string().contains("98765432"), "{e}");
        assert_eq!(e.key(), Some("watch.password"));
        // a syntax error names the key on its line
        let e = parse_err(&format!("{head}secret = \"hunter2\n"));
        assert_eq!(e.key(), Some("secret"));
        assert_eq!(e.line(), Some(3));
    }
}
