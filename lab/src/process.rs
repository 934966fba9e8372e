//! Stopping the processes the lab and the tests started: a signal by PID,
//! and "SIGTERM, then SIGKILL after a grace period". Only ever our own
//! children or VMs, by PID (never by name).

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// The signals the lab sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sig {
    Term,
    Kill,
    /// Freezes the process (a hung instance).
    Stop,
    Cont,
    /// Ctrl-C.
    Int,
}

impl Sig {
    fn number(self) -> libc::c_int {
        match self {
            Sig::Term => libc::SIGTERM,
            Sig::Kill => libc::SIGKILL,
            Sig::Stop => libc::SIGSTOP,
            Sig::Cont => libc::SIGCONT,
            Sig::Int => libc::SIGINT,
        }
    }
}

/// Sends `sig` to process `pid`; false when there is no such process (or
/// it is not ours).
pub fn signal(pid: u32, sig: Sig) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    unsafe { libc::kill(pid, sig.number()) == 0 }
}

/// How a [`stop`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// It exited within the grace period (or had already).
    Exited(ExitStatus),
    /// It had to be killed.
    Killed,
}

impl Stopped {
    /// The exit status when it exited by itself.
    pub fn status(self) -> Option<ExitStatus> {
        match self {
            Stopped::Exited(s) => Some(s),
            Stopped::Killed => None,
        }
    }
}

const POLL: Duration = Duration::from_millis(20);

/// SIGTERM, then SIGKILL when `child` has not exited after `grace`; reaped
/// either way. Blocks the thread: use [`stop_async`] on a runtime.
pub fn stop(child: &mut Child, grace: Duration) -> Stopped {
    if let Ok(Some(s)) = child.try_wait() {
        return Stopped::Exited(s);
    }
    signal(child.id(), Sig::Term);
    match wait(child, grace) {
        Some(s) => Stopped::Exited(s),
        None => kill(child),
    }
}

/// [`stop`] without blocking a runtime thread.
pub async fn stop_async(child: &mut Child, grace: Duration) -> Stopped {
    if let Ok(Some(s)) = child.try_wait() {
        return Stopped::Exited(s);
    }
    signal(child.id(), Sig::Term);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(s)) = child.try_wait() {
            return Stopped::Exited(s);
        }
        tokio::time::sleep(POLL).await;
    }
    kill(child)
}

/// SIGKILL (a crash), and reap it.
pub fn kill(child: &mut Child) -> Stopped {
    let _ = child.kill();
    let _ = child.wait();
    Stopped::Killed
}

/// Waits up to `limit` for `child` to exit (polling: std has no timed wait).
pub fn wait(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn a_process_that_honours_sigterm_exits_by_itself() {
        let mut c = Command::new("sleep").arg("30").spawn().expect("sleep");
        let t = Instant::now();
        let s = stop(&mut c, Duration::from_secs(10));
        assert!(matches!(s, Stopped::Exited(_)), "{s:?}");
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_process_that_ignores_sigterm_is_killed_after_the_grace() {
        let mut c = Command::new("sh")
            .args(["-c", "trap '' TERM; sleep 30"])
            .spawn()
            .expect("sh");
        // Let the shell install its trap before the signal.
        std::thread::sleep(Duration::from_millis(200));
        let t = Instant::now();
        assert_eq!(stop(&mut c, Duration::from_millis(300)), Stopped::Killed);
        assert!(t.elapsed() >= Duration::from_millis(300));
    }

    #[test]
    fn no_such_process_is_reported() {
        let mut c = Command::new("true").spawn().expect("true");
        let pid = c.id();
        let _ = c.wait();
        assert!(!signal(pid, Sig::Term));
    }
}
