//! The lab, never shipped: throwaway XMPP servers on loopback (Prosody,
//! ejabberd, either generation: `install`), simulated users (`sim`), the
//! one-command demo built on Prosody (`demo`), the benchmarks (`bench`: one
//! Prosody, an ejabberd cluster, the web feed) and the soak (`soak`: random
//! faults and a checker, docs/reliability.md). Used by the end-to-end tests and by the
//! `pubpresence-lab` binary; nothing here is needed to run the component.

pub mod admin;
pub mod bench;
pub mod demo;
pub mod ejabberd;
pub mod held;
pub mod install;
pub mod log_fields;
pub mod process;
pub mod prosody;
pub mod sim;
pub mod soak;
pub mod sockets;
pub mod sse;

pub use prosody::{
    Cut, LabError, Prosody, ProsodyOptions, BUSY_OWNER_REFUSALS, SLOW_FETCH, SLOW_HANDSHAKE,
    SLOW_PROBES,
};

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;

/// Locks `m` even when poisoned, for every lock of the lab. Poisoning only
/// says that a thread panicked while holding the lock, and that panic is
/// reported where it happened; a benchmark or a soak would rather read what
/// the lock guards (event logs, counters, tables) and report on it than
/// panic a second time over the same fault.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits until `counter` passes `from`, at most `limit`; false if it did
/// not. For the counts of events that the benchmarks and the soak wait on,
/// moved as the events come.
pub(crate) async fn passed(counter: &watch::Sender<u64>, from: u64, limit: Duration) -> bool {
    let mut rx = counter.subscribe();
    tokio::time::timeout(limit, rx.wait_for(|n| *n > from))
        .await
        .is_ok_and(|r| r.is_ok())
}

/// The shipped `pubpresence` binary, which cargo builds into the same
/// directory as this one (`cargo build --workspace`).
pub fn product_binary() -> std::io::Result<PathBuf> {
    workspace_binary("pubpresence")
}

/// The `pubpresence-lab` binary (for the end-to-end tests of its commands).
pub fn lab_binary() -> std::io::Result<PathBuf> {
    workspace_binary("pubpresence-lab")
}

/// A binary of this workspace beside the running one, or, from a test
/// binary in `target/<profile>/deps`, in the directory above.
fn workspace_binary(name: &str) -> std::io::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let dir = me.parent().map(PathBuf::from).unwrap_or_default();
    let candidates = [dir.join(name), dir.join("..").join(name)];
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "no `{name}` binary beside {}: build both binaries with `cargo build --workspace --bins` \
                 (add --release for the benchmarks)",
                me.display()
            ),
        )
    })
}

/// 127.0.0.n: users connect from distinct loopback addresses so that the
/// IPs the server reports are really checked.
pub fn loopback(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// `n` distinct free TCP ports on 127.0.0.1 for a server to listen on.
///
/// Not `bind(:0)`: that hands out ports from the ephemeral range, the same
/// range every outgoing connection (and every simulated user's bound source
/// port) draws from, so between our probe and the server's own bind another
/// socket could take the port (seen: a component connecting to another
/// test's c2s port and getting `host-unknown`). Ports here come from below
/// Linux's ephemeral range (32768–60999), which no outgoing connection
/// uses, and are never handed out twice by one process.
pub fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    use std::collections::HashSet;
    use std::net::TcpListener;
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let mut given = lock(&GIVEN);
    let given = given.get_or_insert_with(HashSet::new);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        ^ std::process::id().wrapping_mul(2_654_435_761);
    let mut held = Vec::new();
    let mut ports = Vec::new();
    let mut x = seed;
    for _ in 0..(SPAN as usize) {
        if ports.len() == n {
            break;
        }
        // A cheap LCG walk over the span, starting somewhere random.
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let port = (LOW + (x >> 8) % SPAN) as u16;
        if given.contains(&port) {
            continue;
        }
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            held.push(l);
            ports.push(port);
        }
    }
    if ports.len() < n {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "no free port between 20000 and 32000 on 127.0.0.1",
        ));
    }
    given.extend(&ports);
    Ok(ports)
}

/// A directory under the system temp dir, removed (with its contents) on
/// drop unless kept: each lab server's config, data and logs.
#[derive(Debug)]
pub struct LabDir {
    path: std::path::PathBuf,
    keep: bool,
}

impl LabDir {
    /// A new, empty directory named after `prefix`, the process and a counter.
    pub fn new(prefix: &str) -> std::io::Result<LabDir> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        // create_dir (not create_dir_all) fails on an existing directory, so
        // a name collision is retried instead of sharing a directory.
        let mut last = None;
        for _ in 0..16 {
            let n = N.fetch_add(1, Ordering::Relaxed);
            let path =
                std::env::temp_dir().join(format!("{prefix}{}-{nanos:x}-{n}", std::process::id()));
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(LabDir { path, keep: false }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no free name")))
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Keeps the directory after drop (for a look at the logs).
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for LabDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
