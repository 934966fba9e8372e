//! The component's `state_dir` in a lab's directory (README, "Fast
//! restarts: `state_dir`"), shared by the Prosody and the cluster bench.

use std::path::{Path, PathBuf};

/// The component's `state_dir` in the lab's directory.
pub(super) fn state_dir(lab: &Path) -> PathBuf {
    lab.join("state")
}

/// The copy of active the component's clean stop saves in its `state_dir`.
pub(super) fn saved_copy(lab: &Path) -> PathBuf {
    state_dir(lab).join(pubpresence::component::saved::FILE)
}

/// `config` with `state_dir` set to the lab's, which is made.
pub(super) fn with_state_dir(lab: &Path, config: &str) -> std::io::Result<String> {
    let state = state_dir(lab);
    std::fs::create_dir_all(&state)?;
    Ok(format!(
        "state_dir = {:?}\n{config}",
        state.display().to_string()
    ))
}
