//! `signaldesk serve`: the HTTP API over [`signaldesk::api::ApiState::open`].

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use signaldesk::api::ApiState;
use signaldesk::Config;

/// `signaldesk serve`'s arguments.
#[derive(Args)]
pub struct ServeArgs {
    /// Listen here instead of api.addr.
    #[arg(long)]
    pub addr: Option<String>,
    /// Print the sha256 of KEY (what api.keys stores) and exit.
    #[arg(long, value_name = "KEY")]
    pub hash_key: Option<String>,
}

/// Serve until Ctrl-C, or print a key's hash.
pub fn run(config: Config, args: ServeArgs) -> Result<ExitCode> {
    if let Some(key) = args.hash_key {
        outln!("{}", signaldesk::api::key_hash(&key));
        return Ok(ExitCode::SUCCESS);
    }
    super::runtime()?.block_on(async {
        let addr = args.addr.unwrap_or_else(|| config.api.addr.clone());
        let metrics_addr = config.api.metrics_addr.clone();
        let state = Arc::new(ApiState::open(config).await?);
        let metrics = if metrics_addr.is_empty() {
            None
        } else {
            let listener = tokio::net::TcpListener::bind(&metrics_addr)
                .await
                .with_context(|| format!("cannot listen on api.metrics_addr {metrics_addr}"))?;
            eprintln!("signaldesk metrics on http://{}", listener.local_addr()?);
            Some(listener)
        };
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        eprintln!("signaldesk API on http://{}", listener.local_addr()?);
        signaldesk::api::serve(state, listener, metrics).await?;
        Ok(ExitCode::SUCCESS)
    })
}
