//! The command line: clap's definition, also the source of the man pages and
//! the shell completions (`pubpresence generate`, hidden; see packaging/).

use clap::{CommandFactory, Parser, Subcommand};
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "pubpresence",
    version,
    about = "Publishes every XMPP user's presence and IP into pubsub nodes (XEP-0114 component)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the component (foreground; logs to stderr).
    Run {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file and print the effective settings (secret masked).
    CheckConfig {
        /// The TOML config file.
        file: PathBuf,
    },
    /// Follow the presence nodes as an ordinary user (the `[watch]` table of
    /// the config): a live table, or one JSON object per line.
    Watch {
        /// The TOML config file, with a `[watch]` table.
        #[arg(long, short)]
        config: PathBuf,
        /// One JSON object per event on stdout (docs/protocol.md, "JSON events") instead of the table.
        #[arg(long)]
        json: bool,
        /// Serve the web feed on ADDR (the page, /events, /state: docs/protocol.md, "Web feed").
        #[arg(long, value_name = "ADDR")]
        http: Option<String>,
    },
    /// Check the server's set-up live (component, admin rights, pubsub,
    /// storage, presence, clock): one line per check, with the configuration
    /// lines that fix each problem. Exit 0: all passed; 1: a check failed;
    /// 2: doctor could not run.
    Doctor {
        /// The TOML config file `pubpresence run` uses (with `[watch]`, the
        /// member account also checks the nodes as a client).
        #[arg(long, short)]
        config: PathBuf,
        /// The member account's password, read from FILE (instead of
        /// `[watch] password` or `password_file`).
        #[arg(long, value_name = "FILE")]
        member_password_file: Option<PathBuf>,
        /// One JSON object per check, one per line.
        #[arg(long)]
        json: bool,
    },
    /// Write the man pages and the shell completions (bash, zsh, fish) made
    /// from this CLI definition: used to build the Debian package.
    #[command(hide = true)]
    Generate {
        /// Directory for the man pages (pubpresence.1, pubpresence-SUBCOMMAND.1).
        #[arg(long, value_name = "DIR")]
        man: Option<PathBuf>,
        /// Directory for the completions (pubpresence.bash, _pubpresence, pubpresence.fish).
        #[arg(long, value_name = "DIR")]
        completions: Option<PathBuf>,
    },
}

/// `pubpresence generate`: man pages and completions, never written by hand.
pub fn generate(man: Option<&Path>, completions: Option<&Path>) -> anyhow::Result<()> {
    use anyhow::Context;
    let cmd = Cli::command();
    if let Some(dir) = man {
        // pubpresence.1 and pubpresence-SUBCOMMAND.1; hidden subcommands skipped.
        std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
        clap_mangen::generate_to(cmd.clone(), dir)
            .with_context(|| format!("man pages in {}", dir.display()))?;
    }
    if let Some(dir) = completions {
        std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
        // The same command without its hidden subcommands (clap_complete lists them).
        let mut visible = clap::Command::new("pubpresence")
            .version(env!("CARGO_PKG_VERSION"))
            .args(cmd.get_arguments().cloned())
            .subcommands(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
        if let Some(about) = cmd.get_about() {
            visible = visible.about(about.clone());
        }
        let mut cmd = visible;
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            clap_complete::generate_to(shell, &mut cmd, "pubpresence", dir)
                .with_context(|| format!("{shell} completions in {}", dir.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }

    #[test]
    fn generates_man_pages_and_completions() {
        let dir = tempfile::tempdir().unwrap();
        let (man, comp) = (dir.path().join("man"), dir.path().join("comp"));
        super::generate(Some(&man), Some(&comp)).unwrap();
        let page = std::fs::read_to_string(man.join("pubpresence.1")).unwrap();
        assert!(page.contains("check\\-config"), "{page}");
        assert!(
            !page.contains("generate"),
            "the hidden subcommand stays out of the page"
        );
        assert!(man.join("pubpresence-run.1").exists());
        for f in ["pubpresence.bash", "_pubpresence", "pubpresence.fish"] {
            let text = std::fs::read_to_string(comp.join(f)).unwrap();
            assert!(text.contains("check-config"), "{f}");
            assert!(
                !text.contains("generate"),
                "{f} lists the hidden subcommand"
            );
        }
    }
}
