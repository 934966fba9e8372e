//! The copy of active kept on disk across a clean stop (README, "Fast
//! restarts: `state_dir`"; docs/protocol.md, "Status"): what active held
//! when the process stopped, and the token that the `offline` status item
//! carries with it. A start-up whose status node still holds that very
//! item uses the copy instead of fetching active: on Prosody the fetch is
//! most of the server's work in a restart with nothing changed.
//!
//! The file is written only when the copy is exact (every write to active
//! confirmed, none failed) and is removed when read, so a copy is used at
//! most once, and a process that dies without a clean stop leaves none.

use crate::wire::time;
use crate::wire::user::{Status, UserItem};
use serde::{Deserialize, Serialize};
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The file's name inside `state_dir`.
pub const FILE: &str = "active.json";
/// The format this build writes; another one is not read.
const VERSION: u32 = 1;

/// A copy of active, as saved at a clean stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    /// Also on the `offline` status item that was published after it.
    pub token: String,
    /// The pubsub service and the node the items were on.
    pub pubsub: String,
    pub node: String,
    pub items: Vec<UserItem>,
}

#[derive(Serialize, Deserialize)]
struct File {
    version: u32,
    token: String,
    pubsub: String,
    node: String,
    items: Vec<Item>,
}

#[derive(Serialize, Deserialize)]
struct Item {
    fulljid: String,
    name: String,
    status: String,
    ip: String,
    since: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SavedError {
    #[error("writing {path}: {err}")]
    Write { path: PathBuf, err: std::io::Error },
}

/// A token that no earlier stop used: the time to the nanosecond and 64
/// bits from the standard library's per-process random hash keys. It only
/// has to be unique; whoever could forge it could write active anyway.
pub fn new_token() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(nanos);
    h.write_u32(std::process::id());
    format!("{:x}-{:016x}", nanos, h.finish())
}

/// Writes the copy: a temporary file, synced, then renamed over `FILE`, so
/// a reader finds the old file or the whole new one. Owner-only: it holds
/// what active holds (addresses).
pub fn save(dir: &Path, saved: &Saved) -> Result<(), SavedError> {
    let file = File {
        version: VERSION,
        token: saved.token.clone(),
        pubsub: saved.pubsub.clone(),
        node: saved.node.clone(),
        items: saved
            .items
            .iter()
            .map(|i| Item {
                fulljid: i.fulljid.clone(),
                name: i.name.clone(),
                status: i.status.as_str().to_string(),
                ip: i.ip.clone(),
                since: time::format(&i.since),
            })
            .collect(),
    };
    let path = dir.join(FILE);
    let tmp = dir.join(format!("{FILE}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = open_private(&tmp)?;
        serde_json::to_writer(std::io::BufWriter::new(&mut f), &file)?;
        f.flush()?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|err| {
        let _ = std::fs::remove_file(&tmp);
        SavedError::Write { path, err }
    })
}

#[cfg(unix)]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::File::create(path)
}

/// Reads the copy and removes the file (a copy serves one start-up). None
/// when there is none; an unreadable one is said in one line and dropped.
pub fn take(dir: &Path) -> Option<Saved> {
    let path = dir.join(FILE);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(
                "cannot read {} ({e}): fetching active instead",
                path.display()
            );
            return None;
        }
    };
    if let Err(e) = std::fs::remove_file(&path) {
        // Used all the same: the token on the status node changes with our
        // `init`, so the file can never match again.
        tracing::warn!("cannot remove {} ({e})", path.display());
    }
    match parse(&text) {
        Ok(s) => Some(s),
        Err(why) => {
            tracing::warn!(
                "{} is not a copy of active this version wrote ({why}): fetching active instead",
                path.display()
            );
            None
        }
    }
}

fn parse(text: &[u8]) -> Result<Saved, String> {
    let f: File = serde_json::from_slice(text).map_err(|e| e.to_string())?;
    if f.version != VERSION {
        return Err(format!("format {}, this build reads {VERSION}", f.version));
    }
    let mut items = Vec::with_capacity(f.items.len());
    for i in f.items {
        let status = Status::parse(&i.status)
            .filter(|s| *s != Status::Offline)
            .ok_or_else(|| format!("item {}: status {:?}", i.fulljid, i.status))?;
        let since = time::parse(&i.since)
            .ok_or_else(|| format!("item {}: since {:?}", i.fulljid, i.since))?;
        items.push(UserItem {
            fulljid: i.fulljid,
            name: i.name,
            status,
            ip: i.ip,
            since,
        });
    }
    Ok(Saved {
        token: f.token,
        pubsub: f.pubsub,
        node: f.node,
        items,
    })
}

/// Why a copy cannot stand for active at this start-up, if it cannot:
/// `status` is the status node's current item (status, saved token).
pub fn mismatch(
    saved: &Saved,
    pubsub: &str,
    node: &str,
    status: Option<(crate::wire::status::ServiceStatus, Option<String>)>,
) -> Option<String> {
    use crate::wire::status::ServiceStatus;
    if saved.pubsub != pubsub || saved.node != node {
        return Some(format!(
            "it was saved for node {} on {}",
            saved.node, saved.pubsub
        ));
    }
    match status {
        None => Some("the status node holds no item".into()),
        Some((ServiceStatus::Offline, Some(t))) if t == saved.token => None,
        Some((ServiceStatus::Offline, _)) => {
            Some("the status node's `offline` is not the one published with it".into())
        }
        Some((st, _)) => Some(format!(
            "the status node says `{}`: another start wrote since",
            st.as_str()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::status::ServiceStatus;

    fn item(j: &str, status: Status, ip: &str) -> UserItem {
        UserItem {
            fulljid: j.into(),
            name: j.split('/').next().unwrap_or(j).into(),
            status,
            ip: ip.into(),
            since: time::parse("2026-12-06T01:02:03Z").expect("time"),
        }
    }

    fn sample() -> Saved {
        Saved {
            token: new_token(),
            pubsub: "pubsub.example.org".into(),
            node: "presence/active".into(),
            items: vec![
                item("a@example.org/desk", Status::Away, "192.0.2.7"),
                item("b@example.org/ü", Status::Online, ""),
            ],
        }
    }

    #[test]
    fn a_saved_copy_reads_back_once_and_owner_only() {
        let dir = tempfile::tempdir().expect("dir");
        let s = sample();
        save(dir.path(), &s).expect("save");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(FILE))
                .expect("file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(take(dir.path()), Some(s));
        assert_eq!(take(dir.path()), None, "a copy serves one start-up");
        assert!(!dir.path().join(format!("{FILE}.tmp")).exists());
    }

    #[test]
    fn an_unreadable_copy_is_dropped_not_used() {
        let dir = tempfile::tempdir().expect("dir");
        for text in [
            "not json".to_string(),
            r#"{"version":2,"token":"t","pubsub":"p","node":"n","items":[]}"#.into(),
            r#"{"version":1,"token":"t","pubsub":"p","node":"n","items":[{"fulljid":"a@b/c","name":"a@b","status":"offline","ip":"","since":"2026-12-06T01:02:03Z"}]}"#.into(),
            r#"{"version":1,"token":"t","pubsub":"p","node":"n","items":[{"fulljid":"a@b/c","name":"a@b","status":"away","ip":"","since":"yesterday"}]}"#.into(),
        ] {
            std::fs::write(dir.path().join(FILE), &text).expect("write");
            assert_eq!(take(dir.path()), None, "{text}");
            assert!(!dir.path().join(FILE).exists(), "{text}");
        }
    }

    #[test]
    fn tokens_differ() {
        // Taken back to back, as two quick restarts would: the clock alone
        // could repeat; the hash's random keys differ per token.
        let tokens: Vec<String> = (0..1000).map(|_| new_token()).collect();
        let distinct: std::collections::HashSet<&String> = tokens.iter().collect();
        assert_eq!(distinct.len(), tokens.len());
        for t in &tokens {
            let (time, hash) = t.split_once('-').expect("time-hash");
            assert!(u128::from_str_radix(time, 16).is_ok(), "{t}");
            assert_eq!(hash.len(), 16, "{t}");
            assert!(hash.chars().all(|c| c.is_ascii_hexdigit()), "{t}");
        }
    }

    #[test]
    fn only_our_own_offline_lets_the_copy_stand() {
        let s = sample();
        let (p, n) = ("pubsub.example.org", "presence/active");
        let ours = Some((ServiceStatus::Offline, Some(s.token.clone())));
        assert_eq!(mismatch(&s, p, n, ours.clone()), None);
        for (status, why) in [
            (None, "holds no item"),
            (
                Some((ServiceStatus::Offline, Some("other".into()))),
                "not the one published with it",
            ),
            (
                Some((ServiceStatus::Offline, None)),
                "not the one published with it",
            ),
            (Some((ServiceStatus::Init, None)), "says `init`"),
            (
                Some((ServiceStatus::Online, Some(s.token.clone()))),
                "says `online`",
            ),
        ] {
            let got = mismatch(&s, p, n, status).expect("mismatch");
            assert!(got.contains(why), "{got}");
        }
        let other_node = mismatch(&s, p, "other/active", ours.clone()).expect("node");
        assert!(other_node.contains("presence/active"), "{other_node}");
        assert!(mismatch(&s, "pubsub.other.org", n, ours).is_some());
    }
}
