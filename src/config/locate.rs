//! Where a key is written: the 1-based line of a byte offset, of a key, and
//! the key written on a line, read from the text itself (table headers
//! included). Used to give every error its line, also for problems found
//! after parsing, when toml no longer knows the position.

/// 1-based line of byte offset `at`.
pub(super) fn line_of(s: &str, at: usize) -> usize {
    let at = at.min(s.len());
    s.as_bytes()[..at].iter().filter(|b| **b == b'\n').count() + 1
}

/// The dotted key written on each line (1-based line numbers), prefixed with
/// its table; a table header line gives the table's name.
fn keyed_lines(s: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut table: Option<String> = None;
    for (i, raw) in s.lines().enumerate() {
        let t = raw.trim();
        if let Some(h) = header_name(t) {
            out.push((i + 1, h.clone()));
            table = Some(h);
        } else if let Some(k) = t.split_once('=').and_then(|(k, _)| clean_key(k)) {
            let k = match &table {
                Some(tb) => format!("{tb}.{k}"),
                None => k,
            };
            out.push((i + 1, k));
        }
    }
    out
}

/// The dotted key written on (1-based) `line`.
pub(super) fn key_at_line(s: &str, line: usize) -> Option<String> {
    keyed_lines(s)
        .into_iter()
        .find_map(|(l, k)| (l == line).then_some(k))
}

/// The (1-based) line where `key` is written (`server[1]` looks for `server`).
pub(super) fn line_of_key(s: &str, key: &str) -> Option<usize> {
    let key = key.split('[').next().unwrap_or(key);
    keyed_lines(s)
        .into_iter()
        .find_map(|(l, k)| (k == key).then_some(l))
}

fn header_name(t: &str) -> Option<String> {
    let inner = t.strip_prefix("[[").or_else(|| t.strip_prefix('['))?;
    let (name, _) = inner.split_once(']')?;
    clean_key(name)
}

pub(super) fn clean_key(k: &str) -> Option<String> {
    let parts: Vec<String> = k
        .split('.')
        .map(|p| p.trim().trim_matches(['"', '\'']).to_string())
        .collect();
    let ok = parts.iter().all(|p| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    });
    ok.then(|| parts.join("."))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{parse_err, MINIMAL};

    #[test]
    fn keys_and_their_lines() {
        let s = "a = 1\n\n[watch]\njid = \"x\"\n\"http\" = \"y\" # c\n[[t.u]]\nserver.v = 2\nnot a key\n";
        assert_eq!(line_of(s, 0), 1);
        assert_eq!(line_of(s, 6), 2);
        assert_eq!(line_of(s, 10_000), 9);
        assert_eq!(key_at_line(s, 1).as_deref(), Some("a"));
        assert_eq!(key_at_line(s, 2), None);
        assert_eq!(key_at_line(s, 3).as_deref(), Some("watch"));
        assert_eq!(key_at_line(s, 5).as_deref(), Some("watch.http"));
        assert_eq!(key_at_line(s, 7).as_deref(), Some("t.u.server.v"));
        assert_eq!(key_at_line(s, 8), None);
        assert_eq!(line_of_key(s, "watch.jid"), Some(4));
        assert_eq!(line_of_key(s, "t.u.server.v[1]"), Some(7));
        assert_eq!(line_of_key(s, "nowhere"), None);
        assert_eq!(clean_key(" a . 'b' "), Some("a.b".to_string()));
        assert_eq!(clean_key("a b"), None);
    }

    #[test]
    fn checked_values_carry_their_line() {
        let e = parse_err(&format!(
            "{MINIMAL}[access]\nmembers = [\"ok@example.org\", \"a@b/c\"]\n"
        ));
        assert_eq!(e.key(), Some("access.members[1]"));
        assert_eq!(e.line(), Some(8));
        assert!(
            e.to_string().starts_with("line 8: access.members[1]: "),
            "{e}"
        );
        let e = parse_err(&MINIMAL.replace("127.0.0.1:5347", "127.0.0.1"));
        assert_eq!((e.key(), e.line()), (Some("server"), Some(3)));
    }
}
