//! What every benchmark reports beside its figures: the machine, the
//! server and storage, latency percentiles, and a process's CPU and RSS
//! read from /proc.

/// Linux's USER_HZ (the unit of utime/stime in /proc/PID/stat).
const CLK_TCK: f64 = 100.0;

/// The server and storage of the lab's pubsub service, named next to every
/// figure: the Prosody version the lab really runs (`crate::install`).
pub fn storage(memory: bool) -> String {
    let server = crate::install::prosody()
        .map(|i| i.label())
        .unwrap_or_else(|_| "Prosody (not installed)".into());
    if memory {
        format!("{server} pubsub, storage = \"memory\"")
    } else {
        format!("{server} pubsub, storage = \"sql\" (SQLite)")
    }
}

/// Where it ran.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub model: String,
}

impl Machine {
    pub fn probe() -> Machine {
        let model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        Machine {
            nproc: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            model,
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Latency {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    /// Nearest-rank percentiles of `v` (milliseconds).
    pub(crate) fn of(mut v: Vec<f64>) -> Latency {
        if v.is_empty() {
            return Latency::default();
        }
        v.sort_by(|a, b| a.total_cmp(b));
        let p = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Latency {
            samples: v.len(),
            p50_ms: p(0.50),
            p99_ms: p(0.99),
            max_ms: v[v.len() - 1],
        }
    }
}

/// utime + stime of a process, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / CLK_TCK)
}

/// VmRSS of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}
