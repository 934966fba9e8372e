//! The binary's edges: config errors, a wrong secret, secrets kept out of
//! every output.

mod common;

use common::pp::Pubpresence;
use common::Prosody;
use std::process::Command;
use std::time::Duration;

const SECRET: &str = "hunter2-very-secret";

fn pubpresence(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pubpresence"))
        .args(args)
        .env_remove("PUBPRESENCE_SECRET")
        .output()
        .expect("run pubpresence")
}

/// The shipped binary holds the product's commands only: the demo, the
/// simulated users and the benchmarks are `pubpresence-lab`'s.
#[test]
fn help_lists_the_product_commands_only() {
    let out = pubpresence(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let commands: Vec<&str> = help
        .split("Commands:")
        .nth(1)
        .unwrap_or_default()
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        commands,
        ["run", "check-config", "watch", "doctor", "help"],
        "{help}"
    );
}

#[test]
fn broken_config_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.toml");
    let base = format!(
        "jid = \"pubpresence.localhost\"\nserver = \"127.0.0.1:1\"\nsecret = \"{SECRET}\"\ndomain = \"localhost\"\npubsub = \"pubsub.localhost\"\n"
    );
    for (extra, key) in [
        ("colour = \"blue\"\n", "colour"),
        ("probe_timeout = \"soon\"\n", "probe_timeout"),
        ("[nodes]\nlive = \"\"\n", "nodes.live"),
    ] {
        std::fs::write(&f, format!("{base}{extra}")).unwrap();
        for args in [
            vec!["check-config", f.to_str().unwrap()],
            vec!["run", "--config", f.to_str().unwrap()],
        ] {
            let out = pubpresence(&args);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{args:?} accepted {extra:?}");
            assert!(err.contains(key), "{args:?}: error names {key}: {err}");
            assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
            assert!(
                !err.contains(SECRET) && !String::from_utf8_lossy(&out.stdout).contains(SECRET)
            );
        }
    }
    // A syntax error on the secret's own line does not echo it.
    std::fs::write(&f, format!("jid = \"x\"\nsecret = \"{SECRET}\" oops\n")).unwrap();
    let out = pubpresence(&["check-config", f.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains(SECRET));
    // A good file: effective settings, secret masked.
    std::fs::write(&f, &base).unwrap();
    let out = pubpresence(&["check-config", f.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("secret = ***"), "{text}");
    assert!(!text.contains(SECRET));
    assert_eq!(
        text.trim_end().lines().last(),
        Some(
            format!(
                "# the file is valid; check the server's side live with: pubpresence doctor --config {}",
                f.display()
            )
            .as_str()
        ),
        "{text}"
    );
}

#[test]
fn wrong_secret_exits_non_zero_with_a_clear_line() {
    let p = Prosody::start();
    let cfg = p.config_toml(&[]).replace(
        &format!("secret = \"{}\"", p.secret),
        &format!("secret = \"{SECRET}\""),
    );
    assert!(cfg.contains(SECRET), "config has the wrong secret");
    let mut pp = Pubpresence::start(&cfg);
    let status = pp.wait(Duration::from_secs(20)).expect("exits by itself");
    let log = pp.log_text();
    assert!(!status.success(), "non-zero exit; log:\n{log}");
    assert!(log.contains("not-authorized"), "says why: {log}");
    assert!(!log.contains(SECRET), "secret not in the log");
    let last = log.trim().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("pubpresence: ") && last.contains("secret"),
        "last line: {last}"
    );
}

#[test]
fn access_model_the_server_refuses_is_a_clear_startup_error() {
    let p = Prosody::start();
    // Prosody (0.12 and 13) has no `presence` access model.
    let cfg = p
        .config_toml(&[])
        .replace("model = \"whitelist\"", "model = \"presence\"")
        .replace("members = []\n", "");
    let mut pp = Pubpresence::start(&cfg);
    let status = pp.wait(Duration::from_secs(20)).expect("exits by itself");
    let log = pp.log_text();
    assert!(!status.success(), "non-zero exit; log:\n{log}");
    let last = log.trim().lines().last().unwrap_or_default();
    for part in ["presence/status", "access model presence", "refused"] {
        assert!(last.contains(part), "names {part:?}: {last}");
    }
    assert!(
        last.contains("feature-not-implemented") || last.contains("not-acceptable"),
        "the server's answer: {last}"
    );
}
