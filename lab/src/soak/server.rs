//! The server a soak runs against: one Prosody, or a two-node ejabberd
//! cluster (users on both nodes, the component connected to each, README
//! "An ejabberd cluster"). What the loop needs of either.

use crate::ejabberd::Ejabberd;
use crate::Prosody;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub enum Server {
    Prosody(Prosody),
    Cluster(Ejabberd),
}

fn port_of(addr: &str) -> Option<u16> {
    addr.rsplit(':').next()?.parse().ok()
}

impl Server {
    /// Starts the server and registers `names` (password = name).
    pub async fn start(cluster: bool, names: Vec<String>) -> anyhow::Result<Server> {
        if !cluster {
            let p = crate::bench::start_prosody(names, Default::default()).await?;
            return Ok(Server::Prosody(p));
        }
        let e = tokio::task::spawn_blocking(move || -> anyhow::Result<Ejabberd> {
            let mut e = Ejabberd::start_with(crate::ejabberd::EjabberdOptions::default())?;
            e.add_node()?;
            let accounts: Vec<(&str, &str)> =
                names.iter().map(|n| (n.as_str(), n.as_str())).collect();
            e.register_many(&accounts)?;
            Ok(e)
        })
        .await??;
        Ok(Server::Cluster(e))
    }

    pub fn label(&self) -> String {
        match self {
            Server::Prosody(p) => p.label(),
            Server::Cluster(e) => format!("two-node {} cluster", e.label()),
        }
    }

    pub fn domain(&self) -> &str {
        match self {
            Server::Prosody(p) => &p.domain,
            Server::Cluster(e) => &e.domain,
        }
    }

    pub fn component_jid(&self) -> &str {
        match self {
            Server::Prosody(p) => &p.component_jid,
            Server::Cluster(e) => &e.component_jid,
        }
    }

    pub fn pubsub_jid(&self) -> &str {
        match self {
            Server::Prosody(p) => &p.pubsub_jid,
            Server::Cluster(e) => &e.pubsub_jid,
        }
    }

    /// Each node's c2s listener (the first is the one the admin and the
    /// reference client use).
    pub fn c2s_addrs(&self) -> Vec<SocketAddr> {
        match self {
            Server::Prosody(p) => vec![p.c2s_addr()],
            Server::Cluster(e) => (0..e.nodes().len())
                .filter_map(|i| e.c2s_addr_of(i).ok())
                .collect(),
        }
    }

    /// The component listeners' ports, whose connections `cut` kills.
    pub fn component_ports(&self) -> Vec<u16> {
        match self {
            Server::Prosody(p) => vec![p.component_port],
            Server::Cluster(e) => e
                .component_addrs()
                .iter()
                .filter_map(|a| port_of(a))
                .collect(),
        }
    }

    /// The component's config (a whitelist of `members`).
    pub fn config_toml(&self, members: &[&str]) -> String {
        match self {
            Server::Prosody(p) => p.config_toml(members),
            Server::Cluster(e) => e.config_toml_cluster(members),
        }
    }

    /// Every node stopped and started again (blocks).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        match self {
            Server::Prosody(p) => Ok(p.restart()?),
            Server::Cluster(e) => Ok(e.restart()?),
        }
    }

    /// `kill -9` of the last node, until `start_last_node` (blocks; the
    /// cluster only).
    pub fn kill_last_node(&mut self) -> anyhow::Result<()> {
        match self {
            Server::Prosody(_) => anyhow::bail!("a single Prosody has no node to lose"),
            Server::Cluster(e) => {
                let last = e.nodes().len() - 1;
                e.kill_node(last)?;
                e.wait_node_gone(0, last)?;
                Ok(())
            }
        }
    }

    pub fn start_last_node(&mut self) -> anyhow::Result<()> {
        match self {
            Server::Prosody(_) => Ok(()),
            Server::Cluster(e) => {
                let last = e.nodes().len() - 1;
                Ok(e.start_node(last)?)
            }
        }
    }

    pub fn dir(&self) -> &Path {
        match self {
            Server::Prosody(p) => p.dir.path(),
            Server::Cluster(e) => e.dir.path(),
        }
    }

    /// Keeps the server's directory (every log) after the end.
    pub fn keep(&mut self) -> PathBuf {
        match self {
            Server::Prosody(p) => p.dir.keep(),
            Server::Cluster(e) => e.dir.keep(),
        }
        self.dir().to_path_buf()
    }
}
