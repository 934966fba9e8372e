//! Which installed server the lab runs: Debian 12's packages (Prosody 0.12,
//! ejabberd 23.01, installed with apt) or a second generation unpacked by
//! `scripts/install-servers.sh` into a private directory (Prosody 13,
//! ejabberd 24.12 from bookworm-backports). The environment chooses:
//! `PUBPRESENCE_PROSODY_ROOT` and `PUBPRESENCE_EJABBERD_ROOT` name the
//! unpacked tree (the directory holding `usr/`); unset, the system's
//! packages are used. Every lab server reports the software and version it
//! really ran, so that test output and benchmark reports name them.

use std::path::{Path, PathBuf};

/// What installs every server the lab can run.
pub const INSTALL_SCRIPT: &str = "bash scripts/install-servers.sh";

/// The environment variable naming an unpacked Prosody tree.
pub const PROSODY_ROOT_ENV: &str = "PUBPRESENCE_PROSODY_ROOT";
/// The environment variable naming an unpacked ejabberd tree.
pub const EJABBERD_ROOT_ENV: &str = "PUBPRESENCE_EJABBERD_ROOT";

/// One installed server: where its files are and what version they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Install {
    /// `/` for the system's package, else the unpacked tree.
    pub root: PathBuf,
    /// "Prosody" or "ejabberd".
    pub software: &'static str,
    /// As the package says, e.g. "0.12.3", "13.0.1", "23.01", "24.12".
    pub version: String,
}

impl Install {
    /// "Prosody 13.0.1", "ejabberd 24.12".
    pub fn label(&self) -> String {
        format!("{} {}", self.software, self.version)
    }

    /// The version's leading number (0 for "0.12.3", 13, 23, 24).
    pub fn major(&self) -> u32 {
        leading_number(&self.version)
    }

    /// The number after the first dot (12 for "0.12.3", 1 for "23.01").
    pub fn minor(&self) -> u32 {
        self.version
            .split_once('.')
            .map_or(0, |(_, rest)| leading_number(rest))
    }

    /// `root` joined with an absolute system path (`/usr/bin/prosody`).
    pub fn path(&self, system_path: &str) -> PathBuf {
        self.root.join(system_path.trim_start_matches('/'))
    }
}

fn leading_number(s: &str) -> u32 {
    let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap_or(0)
}

fn root_from_env(var: &str) -> PathBuf {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// The Prosody the lab runs, or why there is none.
pub fn prosody() -> Result<Install, String> {
    let root = root_from_env(PROSODY_ROOT_ENV);
    let mut install = Install {
        root,
        software: "Prosody",
        version: String::new(),
    };
    for binary in ["/usr/bin/prosody", "/usr/bin/prosodyctl"] {
        if !install.path(binary).is_file() {
            return Err(missing(&install, binary, PROSODY_ROOT_ENV));
        }
    }
    install.version = std::fs::read_to_string(install.path("/usr/lib/prosody/prosody.version"))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|_| "(unknown version)".into());
    Ok(install)
}

/// The ejabberd the lab runs, or why there is none.
pub fn ejabberd() -> Result<Install, String> {
    let root = root_from_env(EJABBERD_ROOT_ENV);
    let mut install = Install {
        root,
        software: "ejabberd",
        version: String::new(),
    };
    if !install.path("/usr/sbin/ejabberdctl").is_file() {
        return Err(missing(
            &install,
            "/usr/sbin/ejabberdctl",
            EJABBERD_ROOT_ENV,
        ));
    }
    install.version = ejabberd_version(&install.path("/usr/lib/x86_64-linux-gnu"))
        .unwrap_or_else(|| "(unknown version)".into());
    Ok(install)
}

/// The version in the name of the newest `ejabberd-X.Y` directory of Debian's
/// Erlang library dir (`ejabberd-24.12`, beside `ejabberd-24.12-3~bpo12+1`).
fn ejabberd_version(lib: &Path) -> Option<String> {
    std::fs::read_dir(lib)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let v = name.strip_prefix("ejabberd-")?.to_string();
            (!v.contains('-')).then_some(v)
        })
        .max_by_key(|v| (leading_number(v), v.clone()))
}

fn missing(install: &Install, binary: &str, var: &str) -> String {
    if install.root == Path::new("/") {
        format!(
            "{} is not installed ({binary} is missing): run `{INSTALL_SCRIPT}` \
             (apt-get install prosody prosody-modules lua-dbi-sqlite3 ejabberd)",
            install.software
        )
    } else {
        format!(
            "{var}={} holds no {} ({} is missing): run `{INSTALL_SCRIPT}`, \
             which unpacks it there",
            install.root.display(),
            install.software,
            install.path(binary).display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn install(version: &str) -> Install {
        Install {
            root: PathBuf::from("/"),
            software: "ejabberd",
            version: version.into(),
        }
    }

    #[test]
    fn versions_compare_by_number() {
        assert_eq!(
            (install("0.12.3").major(), install("0.12.3").minor()),
            (0, 12)
        );
        assert_eq!(
            (install("13.0.1").major(), install("13.0.1").minor()),
            (13, 0)
        );
        assert_eq!(
            (install("24.12").major(), install("24.12").minor()),
            (24, 12)
        );
        assert_eq!(install("23.01").label(), "ejabberd 23.01");
    }

    #[test]
    fn ejabberd_version_is_read_from_the_library_dir() {
        let dir = tempfile::tempdir().expect("temp dir");
        for d in ["ejabberd-24.12", "ejabberd-24.12-3~bpo12+1", "erlang"] {
            std::fs::create_dir(dir.path().join(d)).expect("mkdir");
        }
        assert_eq!(ejabberd_version(dir.path()).as_deref(), Some("24.12"));
    }

    #[test]
    fn paths_are_under_the_root() {
        let i = Install {
            root: PathBuf::from("/opt/lab/prosody-13"),
            software: "Prosody",
            version: "13.0.1".into(),
        };
        assert_eq!(
            i.path("/usr/bin/prosody"),
            PathBuf::from("/opt/lab/prosody-13/usr/bin/prosody")
        );
        assert_eq!(install("1").path("/usr/bin/x"), PathBuf::from("/usr/bin/x"));
    }
}
