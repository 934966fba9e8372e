//! The benchmarks' error.

use crate::sim;
use crate::LabError;
use pubpresence::xmpp::c2s;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Lab(#[from] LabError),
    #[error("{0}")]
    Setup(String),
    #[error("c2s: {0}")]
    C2s(#[from] c2s::C2sError),
    #[error("simulated users: {0}")]
    Sim(#[from] sim::SimError),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("the component: {0}")]
    Component(String),
}

pub(crate) fn setup(e: impl std::fmt::Display) -> BenchError {
    BenchError::Setup(e.to_string())
}

/// Polls `f` every 20 ms until it holds, or fails with a `Timeout` naming
/// `what` after `limit`.
pub(crate) async fn wait_until(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> bool,
) -> Result<(), BenchError> {
    let deadline = Instant::now() + limit;
    while !f() {
        if Instant::now() > deadline {
            return Err(BenchError::Timeout(what.to_string()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
