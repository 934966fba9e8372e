//! What `pubpresence doctor` prints: one line per check, the fix under each
//! problem, or one JSON object per check (README, "Checking the set-up:
//! `pubpresence doctor`").

use serde::Serialize;
use std::time::Duration;

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
    /// Not run: an earlier check it needs failed, or it does not apply.
    Skip,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "skip",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable name, for scripts and monitoring (docs/protocol.md does not
    /// cover it; the README's doctor section lists them).
    pub check: &'static str,
    pub result: Verdict,
    /// One line: what was found.
    pub summary: String,
    /// The configuration lines that fix the problem, for the server found.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fix: Vec<String>,
    /// How long the check took.
    pub ms: u64,
}

impl Check {
    pub fn new(check: &'static str, result: Verdict, summary: impl Into<String>) -> Check {
        Check {
            check,
            result,
            summary: summary.into(),
            fix: Vec::new(),
            ms: 0,
        }
    }

    pub fn ok(check: &'static str, summary: impl Into<String>) -> Check {
        Check::new(check, Verdict::Ok, summary)
    }

    pub fn warn(check: &'static str, summary: impl Into<String>) -> Check {
        Check::new(check, Verdict::Warn, summary)
    }

    pub fn fail(check: &'static str, summary: impl Into<String>) -> Check {
        Check::new(check, Verdict::Fail, summary)
    }

    pub fn skip(check: &'static str, summary: impl Into<String>) -> Check {
        Check::new(check, Verdict::Skip, summary)
    }

    pub fn with_fix(mut self, fix: Vec<String>) -> Check {
        self.fix = fix;
        self
    }

    pub fn took(mut self, d: Duration) -> Check {
        self.ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self
    }
}

/// The exit code: 0 when nothing failed, 1 on a FAIL (2, "could not run",
/// is the binary's, for errors before any check).
pub fn exit_code(checks: &[Check]) -> u8 {
    if checks.iter().any(|c| c.result == Verdict::Fail) {
        1
    } else {
        0
    }
}

/// The text form: `ok    name   summary`, fix lines indented below.
pub fn text(c: &Check) -> String {
    let mut out = format!("{:<5} {:<20} {}\n", c.result.label(), c.check, c.summary);
    for line in &c.fix {
        out.push_str("        ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The JSON form: one object on one line.
pub fn json(c: &Check) -> String {
    // A struct of strings and numbers always serialises.
    serde_json::to_string(c).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_json_forms() {
        let c = Check::fail("admin", "listing sessions was refused: forbidden")
            .with_fix(vec!["admins = { \"pp.example.org\" }".into()])
            .took(Duration::from_millis(12));
        assert_eq!(
            text(&c),
            "FAIL  admin                listing sessions was refused: forbidden\n        \
             admins = { \"pp.example.org\" }\n"
        );
        assert_eq!(
            json(&c),
            r#"{"check":"admin","result":"fail","summary":"listing sessions was refused: forbidden","fix":["admins = { \"pp.example.org\" }"],"ms":12}"#
        );
        let ok = Check::ok("clock", "1 ms apart");
        assert_eq!(
            json(&ok),
            r#"{"check":"clock","result":"ok","summary":"1 ms apart","ms":0}"#
        );
    }

    #[test]
    fn exit_codes() {
        let ok = Check::ok("a", "");
        let warn = Check::warn("b", "");
        let skip = Check::skip("c", "");
        let fail = Check::fail("d", "");
        assert_eq!(exit_code(&[ok.clone(), warn.clone(), skip.clone()]), 0);
        assert_eq!(exit_code(&[ok, warn, skip, fail]), 1);
    }
}
