//! `pubpresence doctor` against real servers, each set up wrong in exactly
//! one way: doctor names the fault (the exact check), gives the fix and
//! exits 1; a correct server passes every check with exit 0; a config that
//! cannot be used, or a component that is already connected, exits 2.

mod common;

use common::pp::{Pubpresence, User, Watcher, T};
use common::{loopback, Lab, Server};
use pubpresence_lab as lab;
use pubpresence_lab::ejabberd::{Ejabberd, EjabberdOptions};
use std::process::Command;
use std::time::Duration;

const MEMBER: &str = "watcher";

/// One check as doctor's `--json` prints it.
#[derive(Debug, Clone, serde::Deserialize)]
struct Line {
    check: String,
    result: String,
    summary: String,
    #[serde(default)]
    fix: Vec<String>,
}

struct Outcome {
    code: i32,
    lines: Vec<Line>,
    stderr: String,
}

impl Outcome {
    fn get(&self, check: &str) -> &Line {
        self.lines
            .iter()
            .find(|l| l.check == check)
            .unwrap_or_else(|| panic!("no {check} line in {:#?}", self.lines))
    }

    /// (check, result) of every line, in order.
    fn verdicts(&self) -> Vec<(String, String)> {
        self.lines
            .iter()
            .map(|l| (l.check.clone(), l.result.clone()))
            .collect()
    }
}

/// Every check in doctor's order with the verdict `expected` gives it
/// (default: `ok`).
fn expect(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    pubpresence::doctor::CHECKS
        .iter()
        .map(|c| {
            let v = expected
                .iter()
                .find(|(n, _)| n == c)
                .map_or("ok", |(_, v)| v);
            (c.to_string(), v.to_string())
        })
        .collect()
}

/// Runs `pubpresence doctor --json` on `config_toml`.
async fn doctor(config_toml: &str) -> Outcome {
    doctor_with(config_toml, None).await
}

/// The same, with `--member-password-file` holding `member_password`.
async fn doctor_with(config_toml: &str, member_password: Option<&str>) -> Outcome {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("pubpresence.toml");
    std::fs::write(&config, config_toml).expect("write config");
    let password_file = dir.path().join("member.password");
    if let Some(pw) = member_password {
        std::fs::write(&password_file, pw).expect("write password file");
    }
    let with_file = member_password.is_some();
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pubpresence"));
        cmd.args(["doctor", "--json", "--config"]).arg(&config);
        if with_file {
            cmd.arg("--member-password-file").arg(&password_file);
        }
        cmd.env_remove("PUBPRESENCE_SECRET")
            .output()
            .expect("run doctor")
    })
    .await
    .expect("doctor task");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let lines = stdout
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not a JSON check ({e}): {l}\nstderr: {stderr}"))
        })
        .collect();
    Outcome {
        code: out.status.code().unwrap_or(-1),
        lines,
        stderr,
    }
}

/// The config for `server` with the member account in `[watch]`.
fn with_member(server: &impl Lab, component_config: &str) -> String {
    let addr = server.c2s_addr();
    format!(
        "{component_config}\n[watch]\njid = \"{MEMBER}@{domain}\"\npassword = \"{MEMBER}\"\n\
         server = \"{addr}\"\nallow_plaintext = true\n",
        domain = server.domain()
    )
}

fn assert_outcome(o: &Outcome, code: i32, expected: &[(&str, &str)], label: &str) {
    assert_eq!(
        o.verdicts(),
        expect(expected),
        "{label}: verdicts\n{:#?}\nstderr: {}",
        o.lines,
        o.stderr
    );
    assert_eq!(o.code, code, "{label}: exit code; stderr: {}", o.stderr);
}

/// A user subscribed to the component: `run` is started only to approve
/// the subscription (a server bounces it while no component is connected),
/// then stopped, and the user stays online.
async fn subscribed_user(server: &Server, user: &str) -> User {
    server.register(user, user);
    let mut pp =
        Pubpresence::start(&server.config_toml(&[&format!("{MEMBER}@{}", server.domain())]));
    let w = Watcher::connect(server, MEMBER).await;
    w.until_online(&pp).await;
    let u = User::connect(server, user, "desk", loopback(7)).await;
    u.subscribe_to(server.component_jid());
    let me = format!("{user}@{}/desk", server.domain());
    let deadline = tokio::time::Instant::now() + T;
    while !w.active_users().await.contains(&me) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{me} never reached active; log:\n{}",
            pp.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    w.c2s.clone().close().await;
    pp.terminate();
    u
}

/// Doctor on `server` without the member account: exactly the `expected`
/// verdicts, exit code 1, and a fix under `check` that contains `fix`.
async fn one_fault(
    server: &Server,
    label: &str,
    expected: &[(&str, &str)],
    check: &str,
    fix: &str,
) -> Outcome {
    let o = doctor(&server.config_toml(&[])).await;
    assert_outcome(&o, 1, expected, label);
    assert!(
        o.get(check).fix.iter().any(|l| l.contains(fix)),
        "{label}: the fix under {check} names {fix:?}: {:?}",
        o.get(check)
    );
    o
}

/// A server set up right, with a user subscribed to the component and the
/// member account, whose password comes from `--member-password-file` (the
/// config's is wrong): every check passes and `server` names `software`.
async fn set_up_right(server: &Server, software: &str) -> (Outcome, User) {
    server.register(MEMBER, MEMBER);
    let alice = subscribed_user(server, "alice").await;
    let member = format!("{MEMBER}@localhost");
    let config = with_member(server, &server.config_toml(&[&member])).replace(
        &format!("password = \"{MEMBER}\""),
        "password = \"not-this-one\"",
    );
    assert!(config.contains("not-this-one"), "{config}");
    let o = doctor_with(&config, Some(MEMBER)).await;
    assert_outcome(&o, 0, &[("cluster", "skip")], &server.label());
    let runs = format!("localhost runs {software} ");
    assert!(
        o.get("server").summary.starts_with(&runs),
        "{:?}",
        o.get("server")
    );
    (o, alice)
}

fn prosody(options: lab::ProsodyOptions) -> Server {
    Server::Prosody(common::Prosody::from(
        lab::Prosody::start_with(options).unwrap_or_else(|e| panic!("{e}")),
    ))
}

fn ejabberd(options: EjabberdOptions) -> Server {
    Server::Ejabberd(Ejabberd::start_with(options).unwrap_or_else(|e| panic!("{e}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prosody_set_up_right_passes_every_check() {
    let server = prosody(Default::default());
    let (o, _alice) = set_up_right(&server, "Prosody").await;
    assert_eq!(
        o.get("unseen-sessions").summary,
        "all 1 listed sessions answered a probe"
    );
    let pubsub = &o.get("pubsub").summary;
    assert!(
        pubsub.contains("a non-member is refused")
            && pubsub.contains("the member watcher@localhost subscribes and reads"),
        "{pubsub}"
    );
    assert!(o.lines.iter().all(|l| l.fix.is_empty()), "{:#?}", o.lines);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prosody_set_up_wrong_names_each_fault() {
    // A wrong secret: nothing else can be checked.
    let server = prosody(Default::default());
    let config = server
        .config_toml(&[])
        .replace(server.secret(), "not-the-secret");
    let o = doctor(&config).await;
    let skip: Vec<(&str, &str)> = pubpresence::doctor::CHECKS[1..]
        .iter()
        .map(|c| (*c, "skip"))
        .collect();
    let mut want = vec![("connection", "fail")];
    want.extend(skip);
    assert_outcome(&o, 1, &want, "wrong secret");
    assert!(
        o.get("connection")
            .summary
            .contains("refused the component secret"),
        "{:?}",
        o.get("connection")
    );
    assert!(
        o.get("connection")
            .fix
            .iter()
            .any(|l| l.contains("component_secret")),
        "{:?}",
        o.get("connection")
    );

    // A user who never subscribed is invisible.
    server.register("bob", "bob");
    let bob = User::connect(&server, "bob", "laptop", loopback(8)).await;
    let o = doctor(&server.config_toml(&[])).await;
    assert_outcome(
        &o,
        1,
        &[("unseen-sessions", "fail"), ("cluster", "skip")],
        "no subscription",
    );
    assert_eq!(
        o.get("unseen-sessions").summary,
        "1 of 1 connected sessions are invisible to the component (no presence, no \
         subscription): bob@localhost/laptop"
    );
    assert!(o
        .get("unseen-sessions")
        .fix
        .iter()
        .any(|l| l.contains("privileged_entities")));
    bob.close().await;
    drop(server);

    // No admin rights.
    let server = prosody(lab::ProsodyOptions {
        no_admin: true,
        ..Default::default()
    });
    // Prosody also lets only admins create nodes: both checks name `admins`.
    let o = doctor(&server.config_toml(&[])).await;
    assert_outcome(
        &o,
        1,
        &[
            ("admin", "fail"),
            ("pubsub", "fail"),
            ("capacity", "skip"),
            ("storage-cost", "skip"),
            ("storage-correctness", "skip"),
            ("unseen-sessions", "skip"),
            ("cluster", "skip"),
        ],
        "no admin rights",
    );
    for check in ["admin", "pubsub"] {
        assert!(
            o.get(check)
                .fix
                .iter()
                .any(|l| l.contains("admins = { \"pubpresence.localhost\" }")),
            "{:?}",
            o.get(check)
        );
    }
    drop(server);

    // Item caps left low.
    let server = prosody(lab::ProsodyOptions {
        item_cap: Some(50),
        ..Default::default()
    });
    one_fault(
        &server,
        "item cap 50",
        &[("capacity", "fail"), ("cluster", "skip")],
        "capacity",
        "storage_archive_item_limit",
    )
    .await;
    drop(server);

    // The default flat-file store.
    let server = prosody(lab::ProsodyOptions {
        file_storage: true,
        ..Default::default()
    });
    one_fault(
        &server,
        "file store",
        &[("storage-cost", "fail"), ("cluster", "skip")],
        "storage-cost",
        "storage = \"sql\"",
    )
    .await;
    drop(server);

    // The memory store, which corrupts nodes.
    let server = prosody(lab::ProsodyOptions {
        memory_storage: true,
        ..Default::default()
    });
    let o = one_fault(
        &server,
        "memory store",
        &[("storage-correctness", "fail"), ("cluster", "skip")],
        "storage-correctness",
        "storage = \"sql\"",
    )
    .await;
    assert!(
        o.get("storage-correctness")
            .summary
            .contains("instead of [a=1 b=2 d=2 e=1]"),
        "{:?}",
        o.get("storage-correctness")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_that_cannot_run_exits_2() {
    let server = prosody(Default::default());
    let config = server.config_toml(&[]);
    let mut pp = Pubpresence::start(&config);
    pp.wait_log("online", T, "run online").await;
    let o = doctor(&config).await;
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.lines.is_empty(), "{:#?}", o.lines);
    assert!(
        o.stderr.starts_with(
            "pubpresence doctor: could not run: pubpresence.localhost is already connected"
        ),
        "{}",
        o.stderr
    );
    pp.terminate();
    let o = doctor("jid = ").await;
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr.starts_with("pubpresence doctor: could not run: "),
        "{}",
        o.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejabberd_set_up_right_passes_and_wrong_fails() {
    let server = ejabberd(Default::default());
    let (_, _alice) = set_up_right(&server, "ejabberd").await;
    drop(_alice);
    drop(server);

    let server = ejabberd(EjabberdOptions {
        no_admin: true,
        ..Default::default()
    });
    one_fault(
        &server,
        "ejabberd without admin rights",
        &[
            ("admin", "fail"),
            ("unseen-sessions", "skip"),
            ("cluster", "skip"),
        ],
        "admin",
        "mod_configure",
    )
    .await;
    drop(server);

    let server = ejabberd(EjabberdOptions {
        no_create_node: true,
        ..Default::default()
    });
    one_fault(
        &server,
        "ejabberd without node creation",
        &[
            ("pubsub", "fail"),
            ("capacity", "skip"),
            ("storage-cost", "skip"),
            ("storage-correctness", "skip"),
            ("cluster", "skip"),
        ],
        "pubsub",
        "access_createnode",
    )
    .await;
    drop(server);

    let server = ejabberd(EjabberdOptions {
        max_items_node: Some(50),
        ..Default::default()
    });
    one_fault(
        &server,
        "max_items_node 50",
        &[("capacity", "fail"), ("cluster", "skip")],
        "capacity",
        "max_items_node: 100000",
    )
    .await;
}

/// XEP-0356 on ejabberd: on 24.10 and later without `privileged_as` every
/// request is dropped, and doctor says so at once; on 23.01 the same grant
/// is fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejabberd_privileged_without_privileged_as() {
    let server = ejabberd(EjabberdOptions {
        privileged_presence: true,
        ..Default::default()
    });
    let Server::Ejabberd(e) = &server else {
        unreachable!()
    };
    let config = server
        .config_toml(&[])
        .lines()
        .filter(|l| !l.starts_with("privileged_as"))
        .collect::<Vec<_>>()
        .join("\n");
    let o = doctor(&config).await;
    if e.wants_privileged_iq() {
        let mut want = vec![("server", "warn"), ("presence-route", "fail")];
        let rest: Vec<(&str, &str)> = pubpresence::doctor::CHECKS[3..]
            .iter()
            .map(|c| (*c, "skip"))
            .collect();
        want.extend(rest);
        assert_outcome(&o, 1, &want, &server.label());
        assert!(
            o.get("presence-route")
                .fix
                .iter()
                .any(|l| l.contains("privileged_as = \"pubpresence@localhost\"")),
            "{:?}",
            o.get("presence-route")
        );
    } else {
        assert_outcome(&o, 0, &[("cluster", "skip")], &server.label());
    }
    // With the grant the lab gives it (privileged_as on 24.12), all pass.
    let o = doctor(&server.config_toml(&[])).await;
    assert_outcome(&o, 0, &[("cluster", "skip")], &server.label());
    assert!(
        o.get("presence-route")
            .summary
            .starts_with("XEP-0356 presence permission"),
        "{:?}",
        o.get("presence-route")
    );
    if !e.wants_privileged_iq() {
        // 23.01 has no `iq` grant to get wrong.
        return;
    }
    drop(server);

    // privileged_as set, but the grant leaves out the commands namespace:
    // the session listing would be dropped, and doctor names the namespace.
    let commands = "http://jabber.org/protocol/commands";
    let server = ejabberd(EjabberdOptions {
        privileged_presence: true,
        iq_grant_omits: &["http://jabber.org/protocol/commands"],
        ..Default::default()
    });
    let o = doctor(&server.config_toml(&[])).await;
    let mut want = vec![("server", "warn"), ("presence-route", "fail")];
    want.extend(
        pubpresence::doctor::CHECKS[3..]
            .iter()
            .map(|c| (*c, "skip")),
    );
    assert_outcome(&o, 1, &want, &server.label());
    let route = o.get("presence-route");
    assert!(
        route
            .summary
            .contains(&format!("grant lacks IQ permission for {commands} (set)")),
        "{route:?}"
    );
    assert!(
        route
            .fix
            .iter()
            .any(|l| l.trim() == format!("\"{commands}\":")),
        "{route:?}"
    );
}

/// `run`'s remedy for what `unseen-sessions` finds: off by default (the
/// count is logged), and with `subscribe_unseen = true` the user is asked
/// for a subscription, approves, and is tracked. (The watcher, which
/// never subscribes either, is counted too.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_unseen_asks_invisible_users() {
    let server = prosody(Default::default());
    server.register(MEMBER, MEMBER);
    server.register("bob", "bob");
    let bob = User::connect(&server, "bob", "laptop", loopback(8)).await;
    let config = server.config_toml(&[&format!("{MEMBER}@localhost")]);
    let mut pp = Pubpresence::start(&config);
    let w = Watcher::connect(&server, MEMBER).await;
    w.until_online(&pp).await;
    pp.wait_log(
        "start-up: 2 connected sessions of 2 users send the component no presence (no \
         subscription, or a busy server's late answer, tracked when it comes): bob@localhost/laptop, watcher@localhost/watch; set subscribe_unseen = true",
        T,
        "the unseen count",
    )
    .await;
    assert!(
        w.active_users().await.is_empty(),
        "bob is not tracked without a subscription"
    );
    pp.terminate();

    let on = config.replace("probe_timeout", "subscribe_unseen = true\nprobe_timeout");
    let mut pp = Pubpresence::start(&on);
    pp.wait_log(
        "start-up: 2 connected sessions of 2 users send the component no presence (no \
         subscription, or a busy server's late answer, tracked when it comes): bob@localhost/laptop, watcher@localhost/watch; asked 2 of them for a \
         subscription",
        T,
        "the request",
    )
    .await;
    let deadline = tokio::time::Instant::now() + T;
    while w.active_users().await != ["bob@localhost/laptop"] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "bob never reached active after approving; log:\n{}",
            pp.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pp.terminate();
    bob.close().await;
}

/// A two-node ejabberd cluster listed in `server`: doctor connects to the
/// second node too; with that node killed it names the node and exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejabberd_cluster_nodes_checked() {
    let mut e = common::privileged_cluster();
    let config = e.config_toml_cluster(&[]);
    let label = format!("ejabberd {} cluster", e.install.version);
    let o = doctor(&config).await;
    assert_outcome(&o, 0, &[], &label);
    assert_eq!(
        o.get("cluster").summary,
        "all 2 listed nodes take the component's connection"
    );

    e.kill_node(1).expect("kill node 1");
    e.wait_node_gone(0, 1).expect("node 0 sees node 1 gone");
    let o = doctor(&config).await;
    assert_outcome(&o, 1, &[("cluster", "fail")], &label);
    let second = e.component_addr_of(1).expect("node 1's listener");
    let cluster = o.get("cluster");
    assert!(
        cluster.summary.starts_with(&format!(
            "1 of 2 listed nodes refused the component: {second}: "
        )),
        "{cluster:?}"
    );
    assert!(
        cluster.fix.iter().any(|l| l.contains("ejabberd_service")),
        "{cluster:?}"
    );
}
