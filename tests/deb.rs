//! The Debian package, end to end on this machine: `packaging/test-deb.sh`
//! builds it with cargo-deb (installed from crates.io when missing, about a
//! minute) from the debug binary `cargo test` just built, installs it with
//! `dpkg -i`, checks the sample config, the man page and the unit, then
//! removes and purges it and checks that nothing is left. The script purges
//! even when a check fails.
//!
//! Needs root and dpkg. `PUBPRESENCE_SKIP_DEB_TEST=1` skips it (say so in
//! the report: the package is then untested).

use std::path::Path;
use std::process::Command;

/// System-wide: two runs (two checkouts, two `cargo test`) would install and
/// purge the same package under each other.
const LOCK: &str = "/run/lock/pubpresence-deb-test.lock";

#[test]
fn debian_package_installs_checks_and_purges() {
    if std::env::var_os("PUBPRESENCE_SKIP_DEB_TEST").is_some_and(|v| !v.is_empty()) {
        eprintln!("deb: SKIPPED (PUBPRESENCE_SKIP_DEB_TEST is set): the package is not tested");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The binary cargo test built is the one packaged (--no-cargo-build):
    // no second build, no release build.
    let bin = Path::new(env!("CARGO_BIN_EXE_pubpresence"));
    assert!(bin.exists(), "{} missing", bin.display());
    let uid = Command::new("id").arg("-u").output().expect("id -u");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "tests/deb.rs installs a package with dpkg: run as root, or set \
         PUBPRESENCE_SKIP_DEB_TEST=1 to skip it"
    );
    let lock_dir = Path::new(LOCK).parent().unwrap();
    let lock = if lock_dir.is_dir() {
        LOCK.to_string()
    } else {
        "/tmp/pubpresence-deb-test.lock".to_string()
    };
    let mut cmd = Command::new("flock");
    cmd.arg(&lock)
        .arg("bash")
        .arg(root.join("packaging/test-deb.sh"))
        .arg("--no-cargo-build")
        .current_dir(root);
    // build-deb.sh looks for the binary in $CARGO_TARGET_DIR/debug.
    if let Some(target) = bin.parent().and_then(Path::parent) {
        cmd.env("CARGO_TARGET_DIR", target);
    }
    let status = cmd
        .status()
        .expect("running flock bash packaging/test-deb.sh (flock: util-linux)");
    assert!(status.success(), "packaging/test-deb.sh failed: {status}");
}
