//! The configuration file (README, "Configuration file"; the keys that change
//! what readers see are listed in docs/protocol.md, "Configuration keys that
//! change the wire").
//!
//! A TOML file is parsed into [`Config`] (every table refuses unknown keys),
//! checked key by key, and then turned into what a command needs:
//! [`Config::component`] for `pubpresence run`, [`Config::watch`] for
//! `pubpresence watch`, [`Config::describe`] for `pubpresence check-config`.
//!
//! Secrets (the component secret, the watch and standby passwords, the web feed token)
//! are held in [`Secret`], which never prints its value. Every error is one
//! line naming the key, and never contains a secret: toml's own error text
//! quotes the offending source line, so parse errors are rebuilt here from
//! the error's key path and line number only.
//!
//! One room per concern; this file holds the entry points that read a file
//! or a string, and re-exports every public item of the rooms:
//!
//! - `raw`: the file as written (serde types, defaults);
//! - `secret`: [`Secret`], the environment variables, and how a secret is resolved;
//! - `error`: [`ConfigError`] and its one-line rendering;
//! - `parse`: TOML parsing with errors rebuilt without the source text;
//! - `locate`: which key is written on which line;
//! - `validate`: raw to resolved, per table (`validate::watch`, `validate::standby`,
//!   `validate::metrics`);
//! - `settings`: what the commands get;
//! - `show`: the `check-config` text;
//! - `jid`, `addr`: checks of single values.

mod addr;
mod error;
mod jid;
mod locate;
mod parse;
mod raw;
mod secret;
mod settings;
mod show;
#[cfg(test)]
mod testing;
mod validate;

use std::path::Path;

pub use error::ConfigError;
pub use raw::{
    Access, AccessModel, Config, IpMode, MetricsConfig, Nodes, PrivacyConfig, StandbyConfig,
    WatchConfig, DEFAULT_AUDIT_INTERVAL, DEFAULT_C2S_PORT, DEFAULT_IQ_TIMEOUT,
    DEFAULT_PROBE_TIMEOUT, DEFAULT_TAKEOVER,
};
pub use secret::{
    process_env, Env, Secret, SecretSource, ENV_HTTP_TOKEN, ENV_SECRET, ENV_STANDBY_PASSWORD,
    ENV_WATCH_PASSWORD,
};
pub use settings::{
    default_instance_name, AccessSettings, ComponentSettings, PrivacySettings, StandbySettings,
    WatchSettings, DEFAULT_RESUME_WINDOW,
};

use locate::line_of_key;
use parse::parse_toml;

impl Config {
    /// Reads, parses and checks the file at `path`. Relative `*_file` paths are
    /// resolved against the file's directory. Errors name the file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::bare(format!("cannot read the config file: {e}")).with_file(Some(path))
        })?;
        let base = path.parent();
        let mut config = Self::from_toml_str(&text, base).map_err(|e| e.with_file(Some(path)))?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Parses and checks a config held in a string; relative `*_file` paths are
    /// resolved against `base_dir` (or the working directory).
    pub fn from_toml_str(s: &str, base_dir: Option<&Path>) -> Result<Config, ConfigError> {
        let mut config = parse_toml(s)?;
        config.base_dir = base_dir.map(Path::to_path_buf);
        if let Err(mut e) = config.validate() {
            if e.line.is_none() {
                e.line = e.key.as_deref().and_then(|k| line_of_key(s, k));
            }
            return Err(e);
        }
        Ok(config)
    }

    /// The file this config was loaded from.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    fn err(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::new(key, message).with_file(self.source.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::testing::MINIMAL;
    use super::*;

    #[test]
    fn load_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("bad.toml");
        std::fs::write(&p, format!("{MINIMAL}bogus = 1\n")).expect("write");
        let e = Config::load(&p).expect_err("bad");
        let shown = e.to_string();
        assert!(
            shown.starts_with(&format!("{}:7: bogus: ", p.display())),
            "{shown}"
        );
        let e = Config::load(&dir.path().join("nope.toml")).expect_err("missing");
        assert!(e.to_string().contains("nope.toml"), "{e}");
    }
}
