//! The benchmarks' error.

use crate::sim;
use crate::LabError;
use pubpresence::xmpp::c2s;

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
