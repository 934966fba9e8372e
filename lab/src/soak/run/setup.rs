//! The soak's set-up: the server, the component's instances, `watch`, the
//! consumer of `/events`, the users; then the loop, the report and the
//! clean stop.

use super::*;
use crate::soak::lag::Lag;

/// Runs the soak on a throwaway Prosody, or a two-node ejabberd cluster.
pub async fn run(args: &SoakArgs, seed: u64) -> anyhow::Result<Report> {
    if let Some(k) = args
        .faults
        .iter()
        .find(|k| !k.applies(args.ejabberd_cluster))
    {
        anyhow::bail!(
            "--faults {}: not on {} (node-deleted is Prosody's, node-kill the cluster's)",
            k.name(),
            if args.ejabberd_cluster {
                "the ejabberd cluster"
            } else {
                "Prosody"
            }
        );
    }
    let bin = crate::product_binary()?;
    let users = args.users.max(1);
    let burst_users = (users / 2).max(4);
    let mut names = vec![
        "dashboard".to_string(),
        "checker".to_string(),
        "standby".to_string(),
    ];
    names.extend((1..=users).map(|i| format!("sim{i}")));
    names.extend((1..=burst_users).map(|i| format!("burst{i}")));
    let server = Server::start(args.ejabberd_cluster, names).await?;
    let domain = server.domain().to_string();
    let component_jid = server.component_jid().to_string();
    let dir = server.dir().to_path_buf();
    let addrs = server.c2s_addrs();
    // Not the admin: on Prosody a node's own affiliation wins over the
    // server admin's owner rights, so a member admin could not delete nodes.
    let (dashboard, checker) = (format!("dashboard@{domain}"), format!("checker@{domain}"));
    // A user whose first login falls while the component is down asks it
    // for a subscription in vain (the server bounces it); the component
    // asks such users itself (README, "doctor": unseen-sessions). Without
    // it, a login burst during a kill -9 is never tracked.
    let standby = format!("standby@{domain}");
    let mut component_toml = format!(
        "subscribe_unseen = true\n{}",
        server.config_toml(&[dashboard.as_str(), checker.as_str(), standby.as_str()])
    );
    // The component reaches each component port through a relay that can
    // add latency and loss (the `lag` fault; `soak::lag`).
    let upstreams: Vec<std::net::SocketAddr> = server
        .component_ports()
        .iter()
        .map(|p| std::net::SocketAddr::from(([127, 0, 0, 1], *p)))
        .collect();
    let lag = Lag::start(&upstreams, seed).await?;
    for (relay, up) in &lag.routes {
        component_toml = component_toml.replace(&format!("\"{up}\""), &format!("\"{relay}\""));
    }
    // Its metrics say when every change it has seen is written
    // (`pubpresence_requests_in_flight`): agreement needs that too. With
    // `--standby`, two instances (README, "Running two instances").
    let names: &[&str] = if args.standby {
        &["pp-a", "pp-b"]
    } else {
        &["pp"]
    };
    let metrics_ports = crate::free_ports(names.len())?;
    let mut instances = Vec::new();
    for (name, port) in names.iter().zip(&metrics_ports) {
        let config = dir.join(format!("{name}.toml"));
        // Each instance saves its copy of active at a clean stop and may
        // start from it (README, "Fast restarts: `state_dir`"): the soak's
        // clean stops, kills and takeovers put that to the test.
        let state = dir.join(format!("{name}-state"));
        std::fs::create_dir_all(&state)?;
        let mut toml = format!(
            "state_dir = {:?}\n{component_toml}\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n",
            state.display().to_string()
        );
        if args.standby {
            toml = format!(
                "instance = \"{name}\"\n{toml}\n[standby]\njid = \"{standby}\"\npassword = \"standby\"\n\
                 server = \"{}\"\nallow_plaintext = true\ntakeover = \"2s\"\n",
                addrs[0]
            );
        }
        std::fs::write(&config, toml)?;
        instances.push(Instance {
            proc: ComponentProc::new(bin.clone(), config, dir.join(format!("{name}.log"))),
            metrics: format!("http://127.0.0.1:{port}/metrics"),
            name: name.to_string(),
        });
    }
    let watch_config = dir.join("watch.toml");
    std::fs::write(
        &watch_config,
        format!(
            "{component_toml}\n[watch]\njid = \"dashboard@{domain}\"\npassword = \"dashboard\"\n\
             server = \"{}\"\nallow_plaintext = true\nhttp_token = \"{TOKEN}\"\n",
            addrs[0]
        ),
    )?;
    let mut component = Instances {
        list: instances,
        current: 0,
        takeovers: 0,
    };
    component.start_all()?;
    let watch = WatchProc::start(&bin, &watch_config, &dir).await?;
    let http = reqwest::Client::builder().no_proxy().build()?;
    let (sse_cut, cut_rx) = watch::channel(Duration::ZERO);
    let sse = parts::spawn_sse(
        http.clone(),
        format!("{}/events", watch.base),
        TOKEN.into(),
        cut_rx,
    );
    let truth = Arc::new(Mutex::new(Truth::default()));
    let signals = Signals {
        held: watch::channel(0).0,
        ready: watch::channel(0).0,
    };
    // The users, spread over the nodes (user i on node i mod n), each
    // connection from its own address.
    let all = sim::numbered_users("sim", users, 2);
    let mut sims = Vec::new();
    let mut next_ip = 0usize;
    for (k, addr) in addrs.iter().enumerate() {
        let mut opts = SimOptions::numbered(
            addr.to_string(),
            domain.clone(),
            component_jid.clone(),
            "sim",
            0,
            2,
        );
        opts.users = all
            .iter()
            .enumerate()
            .filter(|(i, _)| i % addrs.len() == k)
            .map(|(_, u)| u.clone())
            .collect();
        if opts.users.is_empty() {
            continue;
        }
        opts.rate = args.rate * opts.users.len() as f64 / users as f64;
        opts.seed = seed.wrapping_add(k as u64);
        opts.first_ip = sim::address(Ipv4Addr::new(127, 0, 0, 2), next_ip)
            .ok_or_else(|| anyhow::anyhow!("too many users for 127.0.0.0/8"))?;
        next_ip += opts.connections();
        sims.push(opts);
    }
    let first_burst_ip = sim::address(Ipv4Addr::new(127, 0, 0, 2), next_ip)
        .ok_or_else(|| anyhow::anyhow!("too many users for 127.0.0.0/8"))?;
    let mut burst_opts = SimOptions::numbered(
        addrs[0].to_string(),
        domain.clone(),
        component_jid.clone(),
        "burst",
        burst_users,
        1,
    );
    burst_opts.rate = 0.0;
    burst_opts.first_ip = first_burst_ip;
    burst_opts.login_concurrency = burst_users;
    burst_opts.seed = seed;
    let connections = next_ip;
    let ready_from = *signals.ready.borrow();
    let n_sims = sims.len() as u64;
    let users_sims: Vec<Sim> = sims
        .into_iter()
        .map(|o| start_sim(o, truth.clone(), signals.clone(), SimControl::Hold))
        .collect();
    if !passed(
        &signals.ready,
        ready_from + n_sims - 1,
        Duration::from_secs(120),
    )
    .await
    {
        anyhow::bail!("the simulated users did not all log in within 2 minutes");
    }
    let mut bares: Vec<String> = (1..=users).map(|i| format!("sim{i}@{domain}")).collect();
    bares.extend((1..=burst_users).map(|i| format!("burst{i}@{domain}")));
    let label = server.label();
    let admin = Admin::new(format!("admin@{domain}/soak"), "admin", addrs[0]);
    let reader = Admin::new(format!("{checker}/soak"), "checker", addrs[0]);
    let mut soak = Soak {
        started: Instant::now(),
        server,
        lag,
        component,
        watch,
        admin,
        reader,
        http,
        sse,
        sse_cut,
        truth,
        signals,
        users: users_sims,
        running: true,
        burst: None,
        burst_opts,
        bares,
        report: Report {
            seed,
            server: label,
            connections,
            instances: names.len(),
            ..Report::default()
        },
        last_active: Table::new(),
        last_check: Instant::now(),
        live_mark: 0,
        resync_mark: 0,
        converge: BTreeMap::new(),
        settle: BTreeMap::new(),
    };
    // Every user logged in and still: the first agreement.
    soak.running = false;
    match soak.converge(Duration::from_secs(60)).await {
        Ok((_, active)) => {
            soak.sample_memory(true);
            soak.agreed(active, "start", None);
        }
        Err(d) => {
            soak.diverged("start: no agreement", d);
            soak.resync();
        }
    }
    let cluster = args.ejabberd_cluster;
    let kinds: Vec<FaultKind> = if args.faults.is_empty() {
        FaultKind::ALL
            .into_iter()
            .filter(|k| k.applies(cluster))
            .collect()
    } else {
        args.faults.clone()
    };
    let mut plan = Plan::new(seed, &kinds);
    let end = Instant::now() + args.duration;
    let outcome = async {
        while Instant::now() < end {
            soak.quiet(&mut plan).await;
            soak.fault(&mut plan).await?;
        }
        soak.quiet(&mut plan).await;
        anyhow::Ok(())
    }
    .await;
    soak.sample_memory(false);
    soak.report.seconds = soak.t();
    soak.report.acts = lock(&soak.truth).acts();
    soak.report.takeovers = soak.component.takeovers;
    {
        let s = lock(&soak.sse);
        soak.report.sse_resumed = s.resumed;
        soak.report.sse_reset = s.reset;
    }
    for (k, v) in std::mem::take(&mut soak.converge) {
        if let Some((p50, p99, max)) = check::percentiles(v) {
            soak.report.converge.insert(k, [p50, p99, max]);
        }
    }
    for (k, v) in std::mem::take(&mut soak.settle) {
        if let Some((p50, p99, max)) = check::percentiles(v) {
            soak.report.settle.insert(k, [p50, p99, max]);
        }
    }
    // A clean stop at the end, too.
    for u in std::mem::take(&mut soak.users) {
        let _ = u.control.send(SimControl::Stop);
        let _ = u.task.await;
    }
    if let Some(b) = soak.burst.take() {
        let _ = b.control.send(SimControl::Stop);
        let _ = b.task.await;
    }
    for k in 0..soak.component.list.len() {
        soak.terminate(k, "end").await;
    }
    let Soak {
        mut server, report, ..
    } = soak;
    if !report.divergences.is_empty() {
        // The logs of every part, for the divergences' story.
        let kept = server.keep();
        eprintln!(
            "pubpresence soak: logs kept in {} (pp*.log for the component, watch.log and the server's)",
            kept.display()
        );
    }
    let _ = tokio::task::spawn_blocking(move || drop(server)).await;
    outcome?;
    Ok(report)
}
