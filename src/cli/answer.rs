//! `signaldesk verify`: a claim against the archive, through [`signaldesk::answer::verify`].

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use signaldesk::answer::verifier::Verifier;
use signaldesk::answer::verify::verify;
use signaldesk::search::Searcher;
use signaldesk::store::{AnyStore, Filter};
use signaldesk::{Config, Embedder};

#[derive(Args)]
pub struct VerifyArgs {
    /// The claim to verify.
    claim: String,
    /// Payload filter, as `search --filter` (field=value, field>=value, field<value).
    #[arg(long)]
    filter: Vec<String>,
    /// Items retrieved and read [default: answer.k].
    #[arg(short, long)]
    k: Option<usize>,
    /// Collection (default: answer.collection, else store.collection).
    #[arg(long)]
    collection: Option<String>,
    /// Print the verification as JSON.
    #[arg(long)]
    json: bool,
}

/// Verify one claim and print the verdict with its evidence.
pub async fn run(config: &Config, args: VerifyArgs) -> Result<ExitCode> {
    let filter = Filter::parse_pairs(&args.filter)?;
    let mut settings = config.answer.clone();
    if let Some(k) = args.k {
        anyhow::ensure!(k >= 1, "-k must be at least 1");
        settings.k = k;
    }
    let embedder = Embedder::from_config(config)?;
    let store = AnyStore::open(config)?;
    let collection = args.collection.unwrap_or_else(|| {
        if settings.collection.is_empty() {
            config.store.collection.clone()
        } else {
            settings.collection.clone()
        }
    });
    let verifier = Verifier::load_or_train(
        &embedder,
        &settings.training_claims,
        &settings.training_corpus,
        &config.cache_dir,
        |status| eprintln!("verify: {status}"),
    )?;
    let searcher = Searcher::open(&store, &embedder, &collection, &config.search).await?;
    let v = verify(
        &store,
        &searcher,
        &verifier,
        &settings,
        &args.claim,
        &filter,
    )
    .await?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{}: {}",
        serde_json::to_value(v.verdict)?.as_str().unwrap_or("-"),
        v.claim
    );
    for (i, e) in v.evidence.iter().enumerate() {
        outln!(
            "[{}] {} {:.3}  {}  {}",
            i + 1,
            serde_json::to_value(e.verdict)?.as_str().unwrap_or("-"),
            e.score,
            e.id,
            e.title.as_deref().unwrap_or("")
        );
        for s in &e.rationale {
            outln!(
                "     {:.3} [bytes {}..{}] {}",
                s.score,
                s.start,
                s.end,
                s.text
            );
        }
    }
    if v.evidence.is_empty() {
        outln!(
            "  no retrieved item reaches answer.threshold {} ({} read)",
            settings.threshold,
            v.considered.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
