//! The lab's view of TCP sockets, from `ss` (iproute2): which connections
//! on given ports are still open, and what went over them.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Which end of a socket a port filter names.
#[derive(Clone, Copy, Debug)]
pub enum End {
    /// The socket's own port (`sport`): a listener's accepted connections.
    Local,
    /// The peer's port (`dport`): connections made to a listener.
    Remote,
}

/// `ss -H -t -n FLAGS state S… ( sport|dport = :P or … )`: one line per
/// TCP socket in one of `states` whose `end` port is one of `ports`. An
/// error (`ss` missing or refusing the filter) says so and never reads as
/// "no socket".
pub fn ss(flags: &[&str], states: &[&str], end: End, ports: &[u16]) -> Result<String, String> {
    let mut args: Vec<String> = ["-H", "-t", "-n"].iter().map(|s| s.to_string()).collect();
    args.extend(flags.iter().map(|s| s.to_string()));
    for s in states {
        args.extend(["state".to_string(), s.to_string()]);
    }
    let key = match end {
        End::Local => "sport",
        End::Remote => "dport",
    };
    args.push("(".into());
    for (i, p) in ports.iter().enumerate() {
        if i > 0 {
            args.push("or".into());
        }
        args.extend([key.to_string(), "=".into(), format!(":{p}")]);
    }
    args.push(")".into());
    let out = Command::new("ss")
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running ss (iproute2: apt-get install iproute2): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ss {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Waits (at most `limit`) until no connection accepted on one of the
/// listener `ports` is still open on the listener's side (established, or
/// closed by the peer but not yet by the listener).
pub fn wait_accepted_closed(ports: &[u16], limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        let open = ss(&[], &["established", "close-wait"], End::Local, ports)?
            .lines()
            .count();
        if open == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{open} connections to ports {ports:?} still open after {limit:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn a_connection_held_open_is_waited_for_until_it_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let client = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let (accepted, _) = listener.accept().expect("accept");
        let local = ss(&[], &["established"], End::Local, &[port]).expect("ss");
        assert_eq!(local.lines().count(), 1, "{local}");
        let remote = ss(&[], &["established"], End::Remote, &[port, 9]).expect("ss");
        assert_eq!(remote.lines().count(), 1, "{remote}");
        let held = wait_accepted_closed(&[port], Duration::from_millis(200));
        assert_eq!(
            held,
            Err(format!(
                "1 connections to ports [{port}] still open after 200ms"
            ))
        );
        // The peer gone, the listener's side still open (close-wait).
        drop(client);
        assert!(wait_accepted_closed(&[port], Duration::from_millis(200)).is_err());
        drop(accepted);
        assert_eq!(
            wait_accepted_closed(&[port], Duration::from_secs(5)),
            Ok(())
        );
    }

    #[test]
    fn a_filter_ss_refuses_is_an_error() {
        let e = ss(&[], &["no-such-state"], End::Local, &[1]).expect_err("refused");
        assert!(e.starts_with("ss -H -t -n state no-such-state"), "{e}");
    }
}
