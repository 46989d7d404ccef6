//! `signaldesk collections list|info|drop`: the configured store's collections.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use signaldesk::store::{describe_collection, AnyStore, VectorStore};
use signaldesk::Config;

#[derive(Subcommand)]
pub enum CollectionsCommand {
    /// Every collection with its item and chunk counts, model and aliases.
    List {
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One collection (or alias): model, dimension, counts, BM25 statistics, aliases.
    Info {
        /// Collection or alias name.
        name: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Delete a collection (an alias drops the collection it points at) and its aliases.
    Drop {
        /// Collection or alias name.
        name: String,
        /// Confirm: without it nothing is deleted.
        #[arg(long)]
        yes: bool,
    },
}

pub async fn run(config: &Config, cmd: CollectionsCommand) -> Result<ExitCode> {
    let store = AnyStore::open(config)?;
    match cmd {
        CollectionsCommand::List { json } => {
            let names = store.list_collections().await?;
            if names.is_empty() && !json {
                eprintln!(
                    "no collections in the {} store yet: `signaldesk ingest FILE` creates one",
                    store.backend()
                );
            }
            if !json && !names.is_empty() {
                outln!(
                    "{:<32} {:>8} {:>8} {:>5}  {:<24} aliases",
                    "collection",
                    "items",
                    "chunks",
                    "dims",
                    "model"
                );
            }
            for name in names {
                let d = describe_collection(&store, &name).await?;
                if json {
                    outln!("{}", serde_json::to_string(&d)?);
                } else {
                    outln!(
                        "{:<32} {:>8} {:>8} {:>5}  {:<24} {}",
                        name,
                        d.items,
                        d.chunks,
                        d.dimension,
                        if d.model.is_empty() { "-" } else { &d.model },
                        d.aliases.join(", ")
                    );
                }
            }
        }
        CollectionsCommand::Info { name, json } => {
            let d = describe_collection(&store, &name).await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&d)?);
            } else if let serde_json::Value::Object(fields) = serde_json::to_value(&d)? {
                for (k, v) in fields {
                    outln!(
                        "{k:<18} {}",
                        v.as_str().map_or_else(|| v.to_string(), str::to_string)
                    );
                }
            }
        }
        CollectionsCommand::Drop { name, yes } => {
            let physical = store.resolve(&name).await?;
            if store.collection_spec(&physical).await?.is_none() {
                anyhow::bail!("no collection {name:?} in the {} store", store.backend());
            }
            if !yes {
                anyhow::bail!(
                    "this deletes collection {physical:?} and its aliases for good: add --yes to do it"
                );
            }
            store.drop_collection(&name).await?;
            eprintln!("dropped {physical:?}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
