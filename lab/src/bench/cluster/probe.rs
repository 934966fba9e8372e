//! What the cluster bench counts at an instant (`sample`): the CPU of the
//! component, of each node's Erlang VM and of this process, and the payload
//! bytes of the component's connections to the nodes, from TCP_INFO (why
//! not `/proc/PID/io`: the module doc of `cluster`).

use crate::bench::error::{setup, BenchError};
use crate::bench::measure::cpu_seconds;
use crate::sockets::{self, End};
use std::time::Instant;

/// What is measured: the nodes' Erlang VMs, their component listeners.
pub(super) struct Probe {
    pub(super) nodes: Vec<u32>,
    pub(super) ports: Vec<u16>,
}

/// Counters at one instant.
#[derive(Debug, Clone)]
pub(super) struct Sample {
    pub(super) at: Instant,
    pub(super) component_cpu: f64,
    pub(super) nodes_cpu: Vec<f64>,
    pub(super) clients_cpu: f64,
    pub(super) sent: u64,
    pub(super) received: u64,
}

/// Payload bytes (sent, received) of the established TCP connections whose
/// remote port is one of `ports`, summed, from `ss -tin` (TCP_INFO).
fn wire_bytes(ports: &[u16]) -> Result<(u64, u64), BenchError> {
    let out = sockets::ss(&["-i"], &["established"], End::Remote, ports).map_err(setup)?;
    Ok(parse_ss(&out))
}

/// Sums `bytes_sent` (or `bytes_acked` - 1 where an old kernel has no
/// `bytes_sent`) and `bytes_received` over the sockets `ss -tin` printed.
fn parse_ss(text: &str) -> (u64, u64) {
    let (mut sent, mut received) = (0, 0);
    for line in text.lines() {
        let value = |key: &str| -> Option<u64> {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|v| v.parse().ok())
        };
        if let Some(s) = value("bytes_sent:") {
            sent += s;
        } else if let Some(a) = value("bytes_acked:") {
            sent += a.saturating_sub(1);
        }
        received += value("bytes_received:").unwrap_or(0);
    }
    (sent, received)
}

/// The counters now. `component: None` before it is spawned (a new
/// process starts from zero, and so do its connections).
pub(super) fn sample(component: Option<u32>, probe: &Probe) -> Result<Sample, BenchError> {
    let at = Instant::now();
    let (component_cpu, (sent, received)) = match component {
        Some(pid) => (
            cpu_seconds(pid).ok_or_else(|| setup("the component's CPU time is unreadable"))?,
            wire_bytes(&probe.ports)?,
        ),
        None => (0.0, (0, 0)),
    };
    let nodes_cpu = probe
        .nodes
        .iter()
        .map(|p| cpu_seconds(*p).ok_or_else(|| setup(format!("ejabberd VM {p} is gone"))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Sample {
        at,
        component_cpu,
        nodes_cpu,
        clients_cpu: cpu_seconds(std::process::id()).unwrap_or(0.0),
        sent,
        received,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ss() {
        let text = "0      0      127.0.0.1:46446 127.0.0.1:33573\n\
                    \t bbr wscale:10,10 rto:204 cwnd:11 bytes_sent:1000 bytes_acked:1001 \
                    bytes_received:300 segs_out:4\n\
                    0      0      127.0.0.1:46450 127.0.0.1:33574\n\
                    \t cubic bytes_acked:51 bytes_received:7 segs_out:4\n";
        assert_eq!(parse_ss(text), (1050, 307));
        assert_eq!(parse_ss(""), (0, 0));
    }
}
