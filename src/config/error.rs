//! [`ConfigError`]: a problem as one line naming the file, line and key,
//! and how it is rendered. Separate so that every room reports problems the
//! same way, and so that the one type that ends up in logs is easy to check
//! for secrets (it never holds one).

use std::path::{Path, PathBuf};

/// A configuration problem: one line naming the file, line, key and problem.
/// Never contains a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigError {
    pub(super) file: Option<PathBuf>,
    pub(super) line: Option<usize>,
    pub(super) key: Option<String>,
    pub(super) message: String,
}

impl ConfigError {
    /// An error about `key` (a dotted path such as `watch.password`).
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            file: None,
            line: None,
            key: Some(key.into()),
            message: one_line(&message.into()),
        }
    }

    pub(super) fn bare(message: impl Into<String>) -> Self {
        ConfigError {
            file: None,
            line: None,
            key: None,
            message: one_line(&message.into()),
        }
    }

    /// Attaches the config file's path (shown first in the message).
    pub fn with_file(mut self, file: Option<&Path>) -> Self {
        if self.file.is_none() {
            self.file = file.map(Path::to_path_buf);
        }
        self
    }

    /// The key the error is about, as a dotted path (`server`, `watch.jid`).
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The problem, without file, line or key.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The 1-based line in the config file, where known.
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// The config file, where the config was loaded from one.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    fn render(&self) -> String {
        let mut out = String::new();
        match (&self.file, self.line) {
            (Some(file), Some(line)) => out.push_str(&format!("{}:{line}: ", file.display())),
            (Some(file), None) => out.push_str(&format!("{}: ", file.display())),
            (None, Some(line)) => out.push_str(&format!("line {line}: ")),
            (None, None) => {}
        }
        if let Some(key) = &self.key {
            out.push_str(key);
            out.push_str(": ");
        }
        out.push_str(&self.message);
        out
    }

    /// Key and message only (no file, no line).
    pub(super) fn render_short(&self) -> String {
        match &self.key {
            Some(k) => format!("{k}: {}", self.message),
            None => self.message.clone(),
        }
    }
}

pub(super) fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_file_line_and_key_on_one_line() {
        let e = ConfigError::new("watch.jid", "first\n\n  second  \n");
        assert_eq!(e.key(), Some("watch.jid"));
        assert_eq!(e.message(), "first; second");
        assert_eq!(e.to_string(), "watch.jid: first; second");
        let e = ConfigError { line: Some(4), ..e };
        assert_eq!(e.to_string(), "line 4: watch.jid: first; second");
        let e = e.with_file(Some(Path::new("/etc/p.toml")));
        assert_eq!(e.to_string(), "/etc/p.toml:4: watch.jid: first; second");
        assert_eq!(e.render_short(), "watch.jid: first; second");
        // the first file attached stays
        let e = e.with_file(Some(Path::new("/other.toml")));
        assert_eq!(e.file(), Some(Path::new("/etc/p.toml")));

        let e = ConfigError::bare("cannot read").with_file(Some(Path::new("p.toml")));
        assert_eq!(e.to_string(), "p.toml: cannot read");
        assert_eq!(e.render_short(), "cannot read");
        assert_eq!((e.key(), e.line()), (None, None));
    }
}
