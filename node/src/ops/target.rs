//! The connection arguments shared by the operator subcommands (`--target`, `--cert`,
//! `--api-key-file`, `--server-name`), as the load tester takes them.

use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
pub struct TargetArgs {
    /// The node's QUIC address.
    #[arg(long, default_value = "127.0.0.1:4433")]
    pub target: SocketAddr,
    /// The certificate (PEM) to trust: the dev node's DATA/tls/cert.pem, or a CA.
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// A file holding the API key.
    #[arg(long)]
    pub api_key_file: Option<PathBuf>,
    /// TLS server name of the target.
    #[arg(long, default_value = "localhost")]
    pub server_name: String,
}

impl TargetArgs {
    pub fn client_config(&self) -> anyhow::Result<settle_client::ClientConfig> {
        let cert = self.cert.as_ref().context("--cert is required to reach a node")?;
        let pem = std::fs::read(cert).with_context(|| format!("cannot read {}", cert.display()))?;
        let key = match &self.api_key_file {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?
                .trim()
                .to_string(),
            None => String::new(),
        };
        let mut config = settle_client::ClientConfig::new(self.target, pem, key);
        config.server_name = self.server_name.clone();
        Ok(config)
    }

    pub async fn connect(&self) -> anyhow::Result<settle_client::Client> {
        let config = self.client_config()?;
        settle_client::Client::connect(config).await.with_context(|| format!("cannot reach {}", self.target))
    }
}
