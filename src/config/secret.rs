//! Secrets and where they come from: [`Secret`] (which never prints its
//! value), the environment variables that override the file, and the order
//! in which a secret is looked for (environment, value in the file, file
//! named in the file). Kept apart so that the code that reads secret values
//! is in one place.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Config, ConfigError};

/// Environment variable that overrides `secret` / `secret_file`.
pub const ENV_SECRET: &str = "PUBPRESENCE_SECRET";
/// Environment variable that overrides `[watch] password` / `password_file`.
pub const ENV_WATCH_PASSWORD: &str = "PUBPRESENCE_WATCH_PASSWORD";
/// Environment variable that overrides `[watch] http_token` / `http_token_file`.
pub const ENV_HTTP_TOKEN: &str = "PUBPRESENCE_HTTP_TOKEN";
/// Environment variable that overrides `[standby] password` / `password_file`.
pub const ENV_STANDBY_PASSWORD: &str = "PUBPRESENCE_STANDBY_PASSWORD";

/// How environment variables are looked up (injectable for tests).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, for [`Config::component`], [`Config::watch`] and
/// [`Config::describe`]. A variable set to the empty string counts as unset.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// A secret string (shared secret, password, token). `Debug` and `Display`
/// print `***`; the value is only reachable through [`Secret::expose`].
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value itself. Never log or format it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares with `candidate` without stopping at the first difference
    /// (for checking tokens presented by HTTP clients).
    pub fn matches(&self, candidate: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), candidate.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where a resolved secret came from (for `check-config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable (its name).
    Env(&'static str),
    /// The value written in the config file under this key.
    Inline(&'static str),
    /// A file, named under this key.
    File(&'static str, PathBuf),
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env(var) => write!(f, "from env {var}"),
            SecretSource::Inline(key) => write!(f, "from {key}"),
            SecretSource::File(key, path) => write!(f, "from {key} {}", path.display()),
        }
    }
}

impl Config {
    pub(super) fn resolve_path(&self, path: &Path) -> PathBuf {
        match &self.base_dir {
            Some(base) if path.is_relative() => base.join(path),
            _ => path.to_path_buf(),
        }
    }

    /// Resolves the component secret: env `PUBPRESENCE_SECRET`, else
    /// `secret`, else `secret_file`. `Ok(None)` when none is set.
    pub fn resolve_secret(
        &self,
        env: Env<'_>,
    ) -> Result<Option<(Secret, SecretSource)>, ConfigError> {
        self.resolve(
            env,
            ENV_SECRET,
            ("secret", self.secret.as_ref()),
            ("secret_file", self.secret_file.as_deref()),
        )
    }

    fn resolve(
        &self,
        env: Env<'_>,
        var: &'static str,
        inline: (&'static str, Option<&Secret>),
        file: (&'static str, Option<&Path>),
    ) -> Result<Option<(Secret, SecretSource)>, ConfigError> {
        if let Some(v) = env(var).filter(|v| !v.is_empty()) {
            return Ok(Some((Secret(v), SecretSource::Env(var))));
        }
        if let Some(s) = inline.1 {
            return Ok(Some((s.clone(), SecretSource::Inline(inline.0))));
        }
        let Some(path) = file.1 else {
            return Ok(None);
        };
        let path = self.resolve_path(path);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| self.err(file.0, format!("cannot read {}: {e}", path.display())))?;
        let value = text.trim_end_matches(['\n', '\r']);
        if value.is_empty() {
            return Err(self.err(file.0, format!("{} is empty", path.display())));
        }
        Ok(Some((
            Secret(value.to_string()),
            SecretSource::File(file.0, path),
        )))
    }

    /// The standby password: env `PUBPRESENCE_STANDBY_PASSWORD`, else
    /// `[standby] password`, else `password_file`.
    pub fn resolve_standby_password(
        &self,
        env: Env<'_>,
    ) -> Result<Option<(Secret, SecretSource)>, ConfigError> {
        let sb = self.standby.as_ref();
        self.resolve(
            env,
            ENV_STANDBY_PASSWORD,
            ("standby.password", sb.and_then(|s| s.password.as_ref())),
            (
                "standby.password_file",
                sb.and_then(|s| s.password_file.as_deref()),
            ),
        )
    }

    /// `[watch] password`, else `password_file`.
    pub fn resolve_watch_password(
        &self,
        env: Env<'_>,
    ) -> Result<Option<(Secret, SecretSource)>, ConfigError> {
        let w = self.watch.as_ref();
        self.resolve(
            env,
            ENV_WATCH_PASSWORD,
            ("watch.password", w.and_then(|w| w.password.as_ref())),
            (
                "watch.password_file",
                w.and_then(|w| w.password_file.as_deref()),
            ),
        )
    }

    /// The web feed token: env `PUBPRESENCE_HTTP_TOKEN`, else
    /// `[watch] http_token`, else `http_token_file`.
    pub fn resolve_http_token(
        &self,
        env: Env<'_>,
    ) -> Result<Option<(Secret, SecretSource)>, ConfigError> {
        let w = self.watch.as_ref();
        self.resolve(
            env,
            ENV_HTTP_TOKEN,
            ("watch.http_token", w.and_then(|w| w.http_token.as_ref())),
            (
                "watch.http_token_file",
                w.and_then(|w| w.http_token_file.as_deref()),
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::config::testing::{no_env, parse, MINIMAL, STANDBY};

    #[test]
    fn env_overrides_secret() {
        let c = parse(MINIMAL);
        let env = |k: &str| (k == ENV_SECRET).then(|| "from-env".to_string());
        let s = c.component(&env).expect("component");
        assert_eq!(s.secret.expose(), "from-env");
        assert_eq!(s.secret_source, SecretSource::Env(ENV_SECRET));
        assert!(c
            .describe(&env)
            .contains("secret = *** (from env PUBPRESENCE_SECRET)"));
        // empty env counts as unset
        let empty = |k: &str| (k == ENV_SECRET).then(String::new);
        assert_eq!(
            c.component(&empty).expect("component").secret.expose(),
            "s3cret"
        );
    }

    #[test]
    fn secret_file_read_relative_to_config_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut f = std::fs::File::create(dir.path().join("secret.txt")).expect("create");
        f.write_all(b"file-secret\n").expect("write");
        let cfg_path = dir.path().join("pubpresence.toml");
        std::fs::write(
            &cfg_path,
            MINIMAL.replace("secret = \"s3cret\"", "secret_file = \"secret.txt\""),
        )
        .expect("write config");
        let c = Config::load(&cfg_path).expect("load");
        assert_eq!(c.source(), Some(cfg_path.as_path()));
        let s = c.component(&no_env).expect("component");
        assert_eq!(s.secret.expose(), "file-secret");
        assert!(matches!(
            s.secret_source,
            SecretSource::File("secret_file", _)
        ));
        let d = c.describe(&no_env);
        assert!(d.contains("secret = *** (from secret_file "), "{d}");
        assert!(!d.contains("file-secret"), "{d}");

        // a missing file names the key and the file, never a value
        std::fs::remove_file(dir.path().join("secret.txt")).expect("rm");
        let e = c.component(&no_env).expect_err("missing file");
        assert_eq!(e.key(), Some("secret_file"));
        assert!(
            e.to_string().starts_with(&cfg_path.display().to_string()),
            "{e}"
        );
        // env still wins without reading the file
        let env = |k: &str| (k == ENV_SECRET).then(|| "e".to_string());
        assert!(c.component(&env).is_ok());

        // empty file
        std::fs::write(dir.path().join("secret.txt"), "\n").expect("write");
        let e = c.component(&no_env).expect_err("empty file");
        assert_eq!(e.key(), Some("secret_file"));
    }

    #[test]
    fn secret_never_in_debug_describe_or_errors() {
        let c = parse(&format!(
            "{MINIMAL}[watch]\njid = \"d@example.org\"\npassword = \"pw-hunter2\"\nhttp = \"127.0.0.1:1\"\nhttp_token = \"tok-hunter2\"\n"
        ));
        let s = c.component(&no_env).expect("component");
        let w = c.watch(&no_env).expect("watch");
        for shown in [
            format!("{c:?}"),
            format!("{s:?}"),
            format!("{w:?}"),
            format!("{}", s.secret),
            c.describe(&no_env),
        ] {
            for secret in ["s3cret", "pw-hunter2", "tok-hunter2"] {
                assert!(!shown.contains(secret), "{secret} leaked in {shown}");
            }
        }
        let d = c.describe(&no_env);
        assert!(d.contains("secret = ***"), "{d}");
        assert!(
            d.contains("watch.password = *** (from watch.password)"),
            "{d}"
        );
        assert!(
            d.contains("watch.http_token = *** (from watch.http_token)"),
            "{d}"
        );
        assert!(Secret::new("abc").matches("abc"));
        assert!(!Secret::new("abc").matches("abd"));
        assert!(!Secret::new("abc").matches("ab"));
    }

    #[test]
    fn standby_password_sources() {
        // env wins over the inline value
        let c = parse(&format!("{MINIMAL}{STANDBY}"));
        let env = |k: &str| (k == ENV_STANDBY_PASSWORD).then(|| "sb-env".to_string());
        let sb = c.component(&env).expect("component").standby.expect("sb");
        assert_eq!(sb.password.expose(), "sb-env");
        assert!(c
            .describe(&env)
            .contains("standby.password = *** (from env PUBPRESENCE_STANDBY_PASSWORD)"));
        // other variables do not count
        let other = |k: &str| (k == ENV_WATCH_PASSWORD).then(|| "w".to_string());
        let sb = c.component(&other).expect("component").standby.expect("sb");
        assert_eq!(sb.password.expose(), "sb-hunter2");

        // password_file, relative to the config's directory
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("sb.txt"), "sb-file\n").expect("write");
        let text = format!(
            "{MINIMAL}{}",
            STANDBY.replace("password = \"sb-hunter2\"", "password_file = \"sb.txt\"")
        );
        let c = Config::from_toml_str(&text, Some(dir.path())).expect("parse");
        let sb = c
            .component(&no_env)
            .expect("component")
            .standby
            .expect("sb");
        assert_eq!(sb.password.expose(), "sb-file");
        let d = c.describe(&no_env);
        assert!(
            d.contains("standby.password = *** (from standby.password_file "),
            "{d}"
        );
        assert!(!d.contains("sb-file"), "{d}");
        std::fs::remove_file(dir.path().join("sb.txt")).expect("rm");
        let e = c.component(&no_env).expect_err("missing file");
        assert_eq!(e.key(), Some("standby.password_file"));
        assert!(c.component(&env).is_ok());
    }
}
