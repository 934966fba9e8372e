//! The soak's faults: what can be done to the component, and the seeded
//! generator that picks them. The generator draws from a shuffled bag of
//! every kind asked for, so a short run still meets each kind; the same seed
//! gives the same faults with the same parameters, in the same order.

use crate::sim::Rng;
use std::time::Duration;

/// A kind of fault (`--faults` names them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum FaultKind {
    /// `kill -9` of the component, started again after a while.
    Kill9,
    /// SIGSTOP of the component for some seconds, then SIGCONT.
    Freeze,
    /// A clean restart of the component (SIGTERM, start again).
    Restart,
    /// The XMPP server restarted: every session ends.
    ServerRestart,
    /// The component's TCP connection to the server cut (`ss -K`).
    Cut,
    /// Many users log in at once, or (every other time) log out at once.
    LoginBurst,
    /// A burst of hostile stanzas at the component.
    Hostile,
    /// A pubsub node (active or live) deleted behind the component's back
    /// (Prosody only: on ejabberd only the owner may delete a node).
    NodeDeleted,
    /// A cluster node killed (`kill -9`) and brought back after a while
    /// (the ejabberd cluster only).
    NodeKill,
    /// Latency and loss on the component's connections for some seconds
    /// (`lag`: a relay, as this kernel has no `tc netem`).
    Lag,
}

impl FaultKind {
    pub const ALL: [FaultKind; 10] = [
        FaultKind::Kill9,
        FaultKind::Freeze,
        FaultKind::Restart,
        FaultKind::ServerRestart,
        FaultKind::Cut,
        FaultKind::LoginBurst,
        FaultKind::Hostile,
        FaultKind::NodeDeleted,
        FaultKind::NodeKill,
        FaultKind::Lag,
    ];

    /// The kinds a server can take: `node-deleted` on Prosody, `node-kill`
    /// on the cluster.
    pub fn applies(self, cluster: bool) -> bool {
        match self {
            FaultKind::NodeDeleted => !cluster,
            FaultKind::NodeKill => cluster,
            _ => true,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill9 => "kill-9",
            FaultKind::Freeze => "freeze",
            FaultKind::Restart => "restart",
            FaultKind::ServerRestart => "server-restart",
            FaultKind::Cut => "cut",
            FaultKind::LoginBurst => "login-burst",
            FaultKind::Hostile => "hostile",
            FaultKind::NodeDeleted => "node-deleted",
            FaultKind::NodeKill => "node-kill",
            FaultKind::Lag => "lag",
        }
    }
}

/// One fault to inject, with its drawn parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    /// Kill9: down time; Freeze: how long frozen; Restart: down time;
    /// Lag: how long it lasts.
    pub hold: Duration,
    /// Lag: added each way, and the share of chunks held 200-1000 ms more
    /// (per mille).
    pub delay: Duration,
    pub loss_per_mille: u32,
    /// NodeDeleted: which node (false: active, true: live).
    pub live_node: bool,
    /// The SSE consumer's time away (it is cut at every fault).
    pub consumer_away: Duration,
    /// How long the users go on changing after the fault's end, before
    /// they are held still for the check: changes during the recovery.
    pub churn_after: Duration,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            FaultKind::Kill9 | FaultKind::Restart => {
                write!(
                    f,
                    "{} (down {} ms)",
                    self.kind.name(),
                    self.hold.as_millis()
                )
            }
            FaultKind::Freeze => write!(f, "freeze ({} ms)", self.hold.as_millis()),
            FaultKind::NodeKill => write!(f, "node-kill (down {} ms)", self.hold.as_millis()),
            FaultKind::Lag => write!(
                f,
                "lag ({} ms, {:.1} % loss, for {} ms)",
                self.delay.as_millis(),
                f64::from(self.loss_per_mille) / 10.0,
                self.hold.as_millis()
            ),
            FaultKind::NodeDeleted => write!(
                f,
                "node-deleted ({})",
                if self.live_node { "live" } else { "active" }
            ),
            k => f.write_str(k.name()),
        }
    }
}

/// The seeded fault generator.
pub struct Plan {
    rng: Rng,
    kinds: Vec<FaultKind>,
    bag: Vec<FaultKind>,
}

impl Plan {
    /// `kinds` empty: every kind.
    pub fn new(seed: u64, kinds: &[FaultKind]) -> Plan {
        let mut kinds = kinds.to_vec();
        if kinds.is_empty() {
            kinds = FaultKind::ALL.to_vec();
        }
        kinds.sort();
        kinds.dedup();
        Plan {
            // Not the simulated users' streams: those start from the same
            // seed through Rng::for_stream.
            rng: Rng::new(seed ^ 0x50A4_F417_0000_0001),
            kinds,
            bag: Vec::new(),
        }
    }

    /// A uniformly drawn duration in [lo, hi] ms.
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.rng.next() % (hi - lo + 1))
    }

    /// The quiet time of churn before the next fault.
    pub fn quiet(&mut self) -> Duration {
        self.millis(2_000, 5_000)
    }

    pub fn next_fault(&mut self) -> Fault {
        if self.bag.is_empty() {
            self.bag = self.kinds.clone();
            // Fisher-Yates, popped from the end.
            for i in (1..self.bag.len()).rev() {
                let j = self.rng.below(i + 1);
                self.bag.swap(i, j);
            }
        }
        let kind = self.bag.pop().unwrap_or(FaultKind::Kill9);
        let hold = match kind {
            FaultKind::Kill9 => self.millis(0, 3_000),
            FaultKind::Freeze => self.millis(1_000, 8_000),
            FaultKind::Restart => self.millis(0, 1_000),
            FaultKind::NodeKill => self.millis(2_000, 6_000),
            FaultKind::Lag => self.millis(3_000, 10_000),
            _ => Duration::ZERO,
        };
        // Drawn for `lag` only: the other kinds replay as before.
        let (delay, loss_per_mille) = match kind {
            FaultKind::Lag => (self.millis(50, 400), self.rng.below(101) as u32),
            _ => (Duration::ZERO, 0),
        };
        let live_node = self.rng.next() % 2 == 1;
        let consumer_away = self.millis(0, 3_000);
        // After a server restart the users need time to log in again.
        let churn_after = match kind {
            FaultKind::ServerRestart | FaultKind::NodeKill => self.millis(6_000, 8_000),
            _ => self.millis(0, 3_000),
        };
        Fault {
            kind,
            hold,
            delay,
            loss_per_mille,
            live_node,
            consumer_away,
            churn_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn a_seed_replays_and_every_kind_comes_in_each_round() {
        let mut a = Plan::new(7, &[]);
        let mut b = Plan::new(7, &[]);
        let round: Vec<Fault> = (0..10).map(|_| a.next_fault()).collect();
        let again: Vec<Fault> = (0..10).map(|_| b.next_fault()).collect();
        assert_eq!(round, again);
        let kinds: BTreeSet<FaultKind> = round.iter().map(|f| f.kind).collect();
        assert_eq!(kinds.len(), 10, "{round:?}");
        for f in &round {
            match f.kind {
                FaultKind::Freeze => assert!(f.hold >= Duration::from_secs(1)),
                FaultKind::Kill9 => assert!(f.hold <= Duration::from_secs(3)),
                FaultKind::Hostile => assert_eq!(f.hold, Duration::ZERO),
                FaultKind::Lag => {
                    assert!(f.delay >= Duration::from_millis(50) && f.loss_per_mille <= 100)
                }
                _ => {}
            }
        }
        let only = Plan::new(1, &[FaultKind::Cut, FaultKind::Cut]).next_fault();
        assert_eq!(only.kind, FaultKind::Cut);
    }
}
