//! The component in the cluster bench: a child `pubpresence run`, stopped
//! when done (killed if still running when dropped), and its log read as
//! it grows: the lines the benchmark waits for and their `key=value` fields.

use crate::bench::error::{setup, BenchError};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The component's log line once `online` is published.
pub(super) const ONLINE_LINE: &str = "online: active is up to date";
/// The first words of an audit's log line.
pub(super) const AUDIT_LINE: &str = "audit checked=";
/// The start-up's line when it takes active from the copy its last clean
/// stop saved in `state_dir` (src/component/service/startup.rs).
pub(super) const FROM_COPY_LINE: &str = "saved in state_dir): not fetching it";

pub(super) use crate::log_fields::{field_usize, fields};

/// Reads the new complete lines of a growing log file.
pub(super) struct LogWatch {
    path: PathBuf,
    offset: u64,
    partial: String,
}

impl LogWatch {
    pub(super) fn new(path: &Path) -> LogWatch {
        LogWatch {
            path: path.to_path_buf(),
            offset: 0,
            partial: String::new(),
        }
    }

    pub(super) fn new_lines(&mut self) -> Vec<String> {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).is_err() {
            return Vec::new();
        }
        self.offset += buf.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&buf));
        let mut lines = Vec::new();
        while let Some(at) = self.partial.find('\n') {
            lines.push(self.partial[..at].to_string());
            self.partial.drain(..=at);
        }
        lines
    }
}

pub(super) fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    format!("--- {} ---\n{}", path.display(), lines[start..].join("\n"))
}

/// The component as a child process; killed on drop if still running.
pub(super) struct Component {
    child: Child,
    pub(super) log: PathBuf,
}

impl Component {
    pub(super) fn start(bin: &Path, config: &Path, log: &Path) -> Result<Component, BenchError> {
        let file = std::fs::File::create(log).map_err(setup)?;
        let child = Command::new(bin)
            .arg("run")
            .arg("--config")
            .arg(config)
            // Its own default (info): a RUST_LOG meant for the benchmark
            // would change what is measured.
            .env_remove("RUST_LOG")
            .env_remove("PUBPRESENCE_SECRET")
            .stdin(Stdio::null())
            .stdout(file.try_clone().map_err(setup)?)
            .stderr(file)
            .spawn()
            .map_err(|e| setup(format!("starting {}: {e}", bin.display())))?;
        Ok(Component {
            child,
            log: log.to_path_buf(),
        })
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(super) fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// SIGTERM, bounded; SIGKILL after 30 s.
    pub(super) async fn stop(&mut self) {
        crate::process::stop_async(&mut self.child, Duration::from_secs(30)).await;
    }

    /// Waits for a log line that `want` accepts; every line read is also
    /// given to `seen`.
    pub(super) async fn wait_line(
        &mut self,
        log: &mut LogWatch,
        what: &str,
        limit: Duration,
        want: impl Fn(&str) -> bool,
        mut seen: impl FnMut(&str),
    ) -> Result<(Instant, String), BenchError> {
        let deadline = Instant::now() + limit;
        loop {
            for line in log.new_lines() {
                seen(&line);
                if want(&line) {
                    return Ok((Instant::now(), line));
                }
            }
            if self.exited() {
                return Err(BenchError::Component(format!(
                    "exited while waiting for {what}\n{}",
                    tail(&self.log, 30)
                )));
            }
            if Instant::now() > deadline {
                return Err(BenchError::Timeout(format!(
                    "{what} within {limit:?}\n{}",
                    tail(&self.log, 30)
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        if !self.exited() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_log_fields() {
        let line = "2026-01-01T00:00:00.000000Z  INFO audit checked=10000 on_active=10000 \
                    added=0 replaced=0 probed=0 removed=3";
        assert!(line.contains(AUDIT_LINE));
        assert_eq!(field_usize(line, "checked"), Some(10000));
        assert_eq!(field_usize(line, "removed"), Some(3));
        assert_eq!(field_usize(line, "nope"), None);
    }
}
