//! The optional Prometheus endpoint (`[metrics] listen`): what the running
//! component counts, and `GET /metrics` to read it.
//!
//! [`Metrics`] is a cheap handle (an `Option<Arc<_>>`): the service carries
//! one in its `ServiceConfig` and calls it where things happen. Without
//! `[metrics]` it is empty and every call is a branch on `None`; with it,
//! every series exists from the start (at 0) and each call is one atomic
//! operation on a pre-registered metric (the histogram takes a short lock).
//!
//! The registry and the text format are `prometheus-client`'s (OpenMetrics
//! text, which Prometheus reads); the HTTP side is `axum`.

use crate::wire::status::ServiceStatus;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// Every metric name starts with this (and `_`).
pub const PREFIX: &str = "pubpresence";

/// The path served.
pub const PATH: &str = "/metrics";

/// Content type of the OpenMetrics text format, which Prometheus reads.
pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Buckets of `pubpresence_publish_rtt_seconds`: 1 ms to 5 s.
pub const RTT_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// One label, `[(name, value)]`.
type Label = [(&'static str, &'static str); 1];

/// The `kind` of a presence stanza received (`presences_seen_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    Available,
    Unavailable,
    /// Subscription management, probes, errors.
    Other,
}

impl Seen {
    pub const ALL: [Seen; 3] = [Seen::Available, Seen::Unavailable, Seen::Other];

    pub fn as_str(self) -> &'static str {
        match self {
            Seen::Available => "available",
            Seen::Unavailable => "unavailable",
            Seen::Other => "other",
        }
    }
}

/// A node written to (`items_published_total`, `publish_rtt_seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    Live,
    Active,
    Status,
}

impl Node {
    pub const ALL: [Node; 3] = [Node::Live, Node::Active, Node::Status];

    pub fn as_str(self) -> &'static str {
        match self {
            Node::Live => "live",
            Node::Active => "active",
            Node::Status => "status",
        }
    }
}

/// The `kind` of `errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Connecting to the server's component listener failed.
    Connect,
    /// Creating or configuring a node failed.
    Setup,
    /// Listing the server's sessions (admin command) failed.
    Listing,
    /// Fetching the items of active failed.
    Fetch,
    /// user-stats (a connection's IP) failed.
    UserStats,
    /// A publish (live, active or status) failed.
    Publish,
    /// A retract from active failed.
    Retract,
    /// A stanza that could not be read (ignored).
    BadStanza,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 8] = [
        ErrorKind::Connect,
        ErrorKind::Setup,
        ErrorKind::Listing,
        ErrorKind::Fetch,
        ErrorKind::UserStats,
        ErrorKind::Publish,
        ErrorKind::Retract,
        ErrorKind::BadStanza,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Setup => "setup",
            ErrorKind::Listing => "listing",
            ErrorKind::Fetch => "fetch",
            ErrorKind::UserStats => "user_stats",
            ErrorKind::Publish => "publish",
            ErrorKind::Retract => "retract",
            ErrorKind::BadStanza => "bad_stanza",
        }
    }
}

/// The `kind` of `audit_fixes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fix {
    /// An item whose session is gone, retracted.
    Removed,
    /// A tracked session whose item active had lost, republished.
    Repaired,
    /// A listed session nobody tracked, probed.
    Probed,
}

impl Fix {
    pub const ALL: [Fix; 3] = [Fix::Removed, Fix::Repaired, Fix::Probed];

    pub fn as_str(self) -> &'static str {
        match self {
            Fix::Removed => "removed",
            Fix::Repaired => "repaired",
            Fix::Probed => "probed",
        }
    }
}

/// Value of `pubpresence_role` (only with `[standby]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleValue {
    Standby = 0,
    Active = 1,
}

/// Value of `pubpresence_status`.
pub fn status_value(st: ServiceStatus) -> i64 {
    match st {
        ServiceStatus::Init => 0,
        ServiceStatus::Online => 1,
        ServiceStatus::Offline => 2,
    }
}

/// The metrics, registered once; the handles below share their values with
/// the registry (each is an `Arc` inside).
#[derive(Debug)]
struct Inner {
    registry: Registry,
    presences: [Counter; 3],
    published: [Counter; 3],
    retracted: Counter,
    errors: [Counter; 8],
    reconnects: Counter,
    audits: Counter,
    audit_fixes: [Counter; 3],
    tracked: Gauge,
    in_flight: Gauge,
    status: Gauge,
    role: Option<Gauge>,
    /// Live, active.
    rtt: [Histogram; 2],
}

/// What the component counts; a no-op without `[metrics]`. Clones share
/// the same values.
#[derive(Debug, Clone, Default)]
pub struct Metrics(Option<Arc<Inner>>);

fn family<const N: usize, T: Copy>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    label: &'static str,
    all: [T; N],
    as_str: fn(T) -> &'static str,
) -> [Counter; N] {
    let f = Family::<Label, Counter>::default();
    registry.register(name, help, f.clone());
    all.map(|v| f.get_or_create_owned(&[(label, as_str(v))]))
}

fn rtt_histogram() -> Histogram {
    Histogram::new(RTT_BUCKETS)
}

impl Metrics {
    /// Counts nothing, costs nothing.
    pub fn disabled() -> Metrics {
        Metrics(None)
    }

    /// A registry with every metric; `pubpresence_role` only when `standby`.
    pub fn new(standby: bool) -> Metrics {
        let mut r = Registry::with_prefix(PREFIX);
        let presences = family(
            &mut r,
            "presences_seen",
            "Presence stanzas received, by kind (available, unavailable, other)",
            "kind",
            Seen::ALL,
            Seen::as_str,
        );
        let published = family(
            &mut r,
            "items_published",
            "Items the server confirmed publishing, by node (live, active, status)",
            "node",
            Node::ALL,
            Node::as_str,
        );
        let retracted = Counter::default();
        r.register(
            "items_retracted",
            "Items the server confirmed retracting from active",
            retracted.clone(),
        );
        let errors = family(
            &mut r,
            "errors",
            "Failed requests and unreadable stanzas, by kind",
            "kind",
            ErrorKind::ALL,
            ErrorKind::as_str,
        );
        let reconnects = Counter::default();
        r.register(
            "reconnects",
            "Component connections lost (each is followed by a reconnect and a full start-up)",
            reconnects.clone(),
        );
        let audits = Counter::default();
        r.register(
            "audits",
            "Audits of active against the server's sessions completed",
            audits.clone(),
        );
        let audit_fixes = family(
            &mut r,
            "audit_fixes",
            "Differences audits fixed, by kind (removed, repaired, probed)",
            "kind",
            Fix::ALL,
            Fix::as_str,
        );
        let tracked = Gauge::default();
        r.register(
            "tracked_connections",
            "User connections tracked right now",
            tracked.clone(),
        );
        let in_flight = Gauge::default();
        r.register(
            "requests_in_flight",
            "Requests for tracked connections sent and not yet answered (address lookups, writes to active and live): 0 when every change seen is written",
            in_flight.clone(),
        );
        let status = Gauge::default();
        r.register(
            "status",
            "This instance's service status: 0 init (starting or not connected), 1 online, 2 offline",
            status.clone(),
        );
        let role = standby.then(|| {
            let g = Gauge::default();
            r.register(
                "role",
                "This instance's role with [standby]: 0 standby, 1 active",
                g.clone(),
            );
            g
        });
        let rtt = Family::<Label, Histogram, fn() -> Histogram>::new_with_constructor(
            rtt_histogram as fn() -> Histogram,
        );
        r.register(
            "publish_rtt_seconds",
            "Round trip of publishes on live and active (request sent to the server's answer), by node",
            rtt.clone(),
        );
        let rtt =
            [Node::Live, Node::Active].map(|n| rtt.get_or_create_owned(&[("node", n.as_str())]));
        Metrics(Some(Arc::new(Inner {
            registry: r,
            presences,
            published,
            retracted,
            errors,
            reconnects,
            audits,
            audit_fixes,
            tracked,
            in_flight,
            status,
            role,
            rtt,
        })))
    }

    pub fn is_enabled(&self) -> bool {
        self.0.is_some()
    }

    /// A presence stanza was received.
    pub fn presence(&self, kind: Seen) {
        if let Some(m) = &self.0 {
            m.presences[kind as usize].inc();
        }
    }

    /// The server confirmed a publish on `node`.
    pub fn published(&self, node: Node) {
        if let Some(m) = &self.0 {
            m.published[node as usize].inc();
        }
    }

    /// The server confirmed a retract from active.
    pub fn retracted(&self) {
        if let Some(m) = &self.0 {
            m.retracted.inc();
        }
    }

    pub fn error(&self, kind: ErrorKind) {
        if let Some(m) = &self.0 {
            m.errors[kind as usize].inc();
        }
    }

    /// The component connection was lost.
    pub fn reconnect(&self) {
        if let Some(m) = &self.0 {
            m.reconnects.inc();
        }
    }

    /// An audit completed, fixing `removed`, `repaired` and `probed`.
    pub fn audit(&self, removed: usize, repaired: usize, probed: usize) {
        if let Some(m) = &self.0 {
            m.audits.inc();
            for (fix, n) in [
                (Fix::Removed, removed),
                (Fix::Repaired, repaired),
                (Fix::Probed, probed),
            ] {
                m.audit_fixes[fix as usize].inc_by(n as u64);
            }
        }
    }

    /// Connections tracked right now.
    pub fn tracked(&self, n: usize) {
        if let Some(m) = &self.0 {
            m.tracked.set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Requests for tracked connections under way.
    pub fn in_flight(&self, n: usize) {
        if let Some(m) = &self.0 {
            m.in_flight.set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    pub fn status(&self, st: ServiceStatus) {
        if let Some(m) = &self.0 {
            m.status.set(status_value(st));
        }
    }

    pub fn role(&self, role: RoleValue) {
        if let Some(Some(g)) = self.0.as_ref().map(|m| &m.role) {
            g.set(role as i64);
        }
    }

    /// When a publish starts (`None` without metrics: no clock is read).
    pub fn start(&self) -> Option<Instant> {
        self.0.as_ref().map(|_| Instant::now())
    }

    /// A publish on `node` started at `started` ended with `ok`: counted as
    /// published (with its round trip, for live and active) or as an error.
    pub fn publish_done(&self, node: Node, started: Option<Instant>, ok: bool) {
        let Some(m) = &self.0 else { return };
        if !ok {
            m.errors[ErrorKind::Publish as usize].inc();
            return;
        }
        m.published[node as usize].inc();
        let rtt = match node {
            Node::Live => &m.rtt[0],
            Node::Active => &m.rtt[1],
            Node::Status => return,
        };
        if let Some(t) = started {
            rtt.observe(t.elapsed().as_secs_f64());
        }
    }

    /// The text exposition (OpenMetrics), as served on `/metrics`; empty
    /// without metrics.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Some(m) = &self.0 {
            // Writing into a String cannot fail.
            let _ = encode(&mut out, &m.registry);
        }
        out
    }

    /// Binds `addr` and serves `GET /metrics` there in a task of its own.
    /// The bind error is returned (a configuration problem); the task runs
    /// until aborted. Returns the bound address and the task.
    pub async fn serve(
        &self,
        addr: SocketAddr,
    ) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let app = Router::new()
            .route(PATH, get(scrape))
            .with_state(self.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!("metrics endpoint stopped: {e}");
            }
        });
        Ok((bound, task))
    }
}

async fn scrape(State(m): State<Metrics>) -> Response {
    ([(CONTENT_TYPE, CONTENT_TYPE_OPENMETRICS)], m.encode()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample `name` (with its labels, as written).
    fn value(text: &str, sample: &str) -> Option<f64> {
        text.lines().find_map(|l| {
            let (name, v) = l.rsplit_once(' ')?;
            (name == sample).then(|| v.parse().ok())?
        })
    }

    #[test]
    fn every_series_exists_from_the_start() {
        let m = Metrics::new(false);
        let t = m.encode();
        for sample in [
            "pubpresence_presences_seen_total{kind=\"available\"}",
            "pubpresence_presences_seen_total{kind=\"unavailable\"}",
            "pubpresence_presences_seen_total{kind=\"other\"}",
            "pubpresence_items_published_total{node=\"live\"}",
            "pubpresence_items_published_total{node=\"active\"}",
            "pubpresence_items_published_total{node=\"status\"}",
            "pubpresence_items_retracted_total",
            "pubpresence_errors_total{kind=\"connect\"}",
            "pubpresence_errors_total{kind=\"setup\"}",
            "pubpresence_errors_total{kind=\"listing\"}",
            "pubpresence_errors_total{kind=\"fetch\"}",
            "pubpresence_errors_total{kind=\"user_stats\"}",
            "pubpresence_errors_total{kind=\"publish\"}",
            "pubpresence_errors_total{kind=\"retract\"}",
            "pubpresence_errors_total{kind=\"bad_stanza\"}",
            "pubpresence_reconnects_total",
            "pubpresence_audits_total",
            "pubpresence_audit_fixes_total{kind=\"removed\"}",
            "pubpresence_audit_fixes_total{kind=\"repaired\"}",
            "pubpresence_audit_fixes_total{kind=\"probed\"}",
            "pubpresence_tracked_connections",
            "pubpresence_status",
            "pubpresence_publish_rtt_seconds_count{node=\"live\"}",
            "pubpresence_publish_rtt_seconds_count{node=\"active\"}",
        ] {
            assert_eq!(value(&t, sample), Some(0.0), "{sample} in\n{t}");
        }
        assert!(!t.contains("pubpresence_role"), "{t}");
        assert!(t.ends_with("# EOF\n"), "{t}");
        assert!(t.contains("# TYPE pubpresence_publish_rtt_seconds histogram"));
        for le in ["0.001", "5.0", "+Inf"] {
            let b = format!("pubpresence_publish_rtt_seconds_bucket{{le=\"{le}\",node=\"live\"}}");
            assert_eq!(value(&t, &b), Some(0.0), "{b} in\n{t}");
        }
    }

    #[test]
    fn calls_count() {
        let m = Metrics::new(true);
        let c = m.clone();
        c.presence(Seen::Available);
        c.presence(Seen::Available);
        c.presence(Seen::Other);
        let t0 = c.start();
        assert!(t0.is_some());
        c.publish_done(Node::Active, t0, true);
        c.publish_done(Node::Live, t0, true);
        c.publish_done(Node::Live, t0, false);
        c.publish_done(Node::Status, None, true);
        c.retracted();
        c.error(ErrorKind::UserStats);
        c.reconnect();
        c.audit(2, 1, 0);
        c.tracked(3);
        c.status(ServiceStatus::Online);
        c.role(RoleValue::Active);
        let t = m.encode();
        let v = |s: &str| value(&t, s).unwrap_or_else(|| panic!("{s} missing in\n{t}"));
        assert_eq!(
            v("pubpresence_presences_seen_total{kind=\"available\"}"),
            2.0
        );
        assert_eq!(v("pubpresence_presences_seen_total{kind=\"other\"}"), 1.0);
        assert_eq!(v("pubpresence_items_published_total{node=\"active\"}"), 1.0);
        assert_eq!(v("pubpresence_items_published_total{node=\"live\"}"), 1.0);
        assert_eq!(v("pubpresence_items_published_total{node=\"status\"}"), 1.0);
        assert_eq!(v("pubpresence_errors_total{kind=\"publish\"}"), 1.0);
        assert_eq!(v("pubpresence_errors_total{kind=\"user_stats\"}"), 1.0);
        assert_eq!(v("pubpresence_items_retracted_total"), 1.0);
        assert_eq!(v("pubpresence_reconnects_total"), 1.0);
        assert_eq!(v("pubpresence_audits_total"), 1.0);
        assert_eq!(v("pubpresence_audit_fixes_total{kind=\"removed\"}"), 2.0);
        assert_eq!(v("pubpresence_audit_fixes_total{kind=\"repaired\"}"), 1.0);
        assert_eq!(v("pubpresence_tracked_connections"), 3.0);
        assert_eq!(v("pubpresence_status"), 1.0);
        assert_eq!(v("pubpresence_role"), 1.0);
        assert_eq!(
            v("pubpresence_publish_rtt_seconds_count{node=\"live\"}"),
            1.0
        );
        assert_eq!(
            v("pubpresence_publish_rtt_seconds_count{node=\"active\"}"),
            1.0
        );
        c.role(RoleValue::Standby);
        c.status(ServiceStatus::Offline);
        let t = m.encode();
        assert_eq!(value(&t, "pubpresence_role"), Some(0.0));
        assert_eq!(value(&t, "pubpresence_status"), Some(2.0));
    }

    #[test]
    fn disabled_counts_nothing() {
        let m = Metrics::disabled();
        assert!(!m.is_enabled());
        assert!(m.start().is_none());
        m.presence(Seen::Available);
        m.publish_done(Node::Live, None, true);
        m.role(RoleValue::Active);
        assert_eq!(m.encode(), "");
        assert!(!Metrics::default().is_enabled());
    }

    #[tokio::test]
    async fn serves_get_metrics_and_refuses_a_taken_address() {
        let m = Metrics::new(false);
        let (addr, task) = m
            .serve("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        m.tracked(7);
        let res = reqwest::get(format!("http://{addr}{PATH}"))
            .await
            .expect("GET /metrics");
        assert_eq!(res.status(), 200);
        let ct = res.headers()[CONTENT_TYPE]
            .to_str()
            .expect("ascii")
            .to_string();
        assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
        let body = res.text().await.expect("body");
        assert!(body.contains("pubpresence_tracked_connections 7"), "{body}");
        let other = reqwest::get(format!("http://{addr}/"))
            .await
            .expect("GET /");
        assert_eq!(other.status(), 404);
        // The same address again: a bind error, returned.
        assert!(Metrics::new(false).serve(addr).await.is_err());
        task.abort();
    }
}
