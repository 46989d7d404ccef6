//! `signaldesk verify` and `signaldesk ask`: a claim or a question against the archive, through
//! [`signaldesk::answer::verify`] and [`signaldesk::answer::ask`].

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use signaldesk::answer::ask::{ask, Composer};
use signaldesk::answer::verifier::Verifier;
use signaldesk::answer::verify::verify;
use signaldesk::llm::AnyLlm;
use signaldesk::search::Searcher;
use signaldesk::store::{AnyStore, Filter};
use signaldesk::{Config, Embedder};

/// What `verify` and `ask` retrieve from.
#[derive(Args)]
pub struct Retrieval {
    /// Payload filter, as `search --filter` (field=value, field>=value, field<value).
    #[arg(long)]
    filter: Vec<String>,
    /// Items retrieved and read [default: answer.k].
    #[arg(short, long)]
    k: Option<usize>,
    /// Collection (default: answer.collection, else store.collection).
    #[arg(long)]
    collection: Option<String>,
}

impl Retrieval {
    /// The filter, the number of items and the collection, defaults filled from `config`.
    fn resolve(&self, config: &Config) -> Result<(Filter, usize, String)> {
        let settings = &config.answer;
        let k = self.k.unwrap_or(settings.k);
        anyhow::ensure!(k >= 1, "-k must be at least 1");
        let collection = self
            .collection
            .clone()
            .unwrap_or_else(|| settings.collection_or(&config.store.collection));
        Ok((Filter::parse_pairs(&self.filter)?, k, collection))
    }
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The claim to verify (or use --claims, or --train).
    #[arg(required_unless_present_any = ["claims", "train"], conflicts_with_all = ["claims", "train"])]
    claim: Option<String>,
    /// Verify every claim of a JSONL file ({"id", "claim"} per line, as SciFact's claims files)
    /// and print one JSON line per claim: its id and its verification.
    #[arg(long, value_name = "FILE")]
    claims: Option<std::path::PathBuf>,
    #[command(flatten)]
    retrieval: Retrieval,
    /// Print the verification as JSON.
    #[arg(long)]
    json: bool,
    /// Train the verifier (or find it already trained on the same data) and exit: with
    /// --training-claims, on a newsroom's own labelled claims.
    #[arg(long, conflicts_with = "claims")]
    train: bool,
    /// Labelled claims to train on, in SciFact's JSONL format [default: answer.training_claims].
    /// Set answer.training_claims to the same file so every command and the server use them.
    #[arg(long, value_name = "FILE")]
    training_claims: Option<std::path::PathBuf>,
    /// The corpus their evidence ids point to (BEIR corpus.jsonl or .jsonl.gz)
    /// [default: answer.training_corpus].
    #[arg(long, value_name = "FILE")]
    training_corpus: Option<std::path::PathBuf>,
}

/// The (id, claim) of every line of a claims file; a line without a claim is an error naming it.
fn read_claim_lines(path: &std::path::Path) -> Result<Vec<(serde_json::Value, String)>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| {
            let v: serde_json::Value = serde_json::from_str(l)
                .map_err(|e| anyhow::anyhow!("{} line {}: {e}", path.display(), n + 1))?;
            let claim = v["claim"].as_str().map(str::to_string).ok_or_else(|| {
                anyhow::anyhow!("{} line {}: no \"claim\" string", path.display(), n + 1)
            })?;
            Ok((v["id"].clone(), claim))
        })
        .collect()
}

/// Verify one claim (or a file of them) and print the verdict with its evidence.
pub async fn run(config: &Config, args: VerifyArgs) -> Result<ExitCode> {
    let (filter, k, collection) = args.retrieval.resolve(config)?;
    let mut settings = config.answer.clone();
    settings.k = k;
    if let Some(path) = args.training_claims {
        settings.training_claims = path;
    }
    if let Some(path) = args.training_corpus {
        settings.training_corpus = path;
    }
    let embedder = Embedder::from_config(config)?;
    let verifier = Verifier::load_or_train(
        &embedder,
        &settings.training_claims,
        &settings.training_corpus,
        &config.cache_dir,
        |status| eprintln!("verify: {status}"),
    )?;
    if args.train {
        outln!(
            "verifier {} ({} claims, {} items) from {} over {}, cached under {}",
            verifier.version,
            verifier.trained_on.0,
            verifier.trained_on.1,
            settings.training_claims.display(),
            settings.training_corpus.display(),
            config.cache_dir.join("verifier").display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let store = AnyStore::open(config)?;
    let searcher = Searcher::open(&store, &embedder, &collection, &config.search).await?;
    if let Some(path) = &args.claims {
        for (id, claim) in read_claim_lines(path)? {
            let v = verify(&store, &searcher, &verifier, &settings, &claim, &filter).await?;
            let mut line = serde_json::to_value(&v)?;
            line["id"] = id;
            outln!("{line}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let claim = args.claim.unwrap_or_default();
    let v = verify(&store, &searcher, &verifier, &settings, &claim, &filter).await?;
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

#[derive(Args)]
pub struct AskArgs {
    /// The question.
    question: String,
    #[command(flatten)]
    retrieval: Retrieval,
    /// Answer extractively (the best passages, cited) without calling the LLM.
    #[arg(long)]
    no_llm: bool,
    /// Print the answer as JSON.
    #[arg(long)]
    json: bool,
}

/// Answer one question from the archive and print it with its citations.
pub async fn run_ask(config: &Config, args: AskArgs) -> Result<ExitCode> {
    let (filter, k, collection) = args.retrieval.resolve(config)?;
    let settings = &config.answer;
    let embedder = Embedder::from_config(config)?;
    let store = AnyStore::open(config)?;
    let verifier = Verifier::load_or_train(
        &embedder,
        &settings.training_claims,
        &settings.training_corpus,
        &config.cache_dir,
        |status| eprintln!("ask: {status}"),
    )?;
    let llm = if args.no_llm || !settings.ask.llm {
        None
    } else {
        Some(AnyLlm::from_config(config, None, None)?)
    };
    let composer = llm
        .as_ref()
        .map(|llm| Composer::configured(llm, config))
        .transpose()?;
    let searcher = Searcher::open(&store, &embedder, &collection, &config.search).await?;
    let a = ask(
        &store,
        &searcher,
        &verifier,
        composer.as_ref(),
        &settings.ask,
        k,
        &args.question,
        &filter,
        None,
    )
    .await?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&a)?);
        return Ok(ExitCode::SUCCESS);
    }
    outln!("Q: {}", a.question);
    outln!("A: {}", a.answer);
    if let Some(reason) = &a.fallback_reason {
        outln!("   (extractive: {reason})");
    }
    let cited: std::collections::BTreeSet<usize> = a
        .statements
        .iter()
        .flat_map(|s| s.citations.iter().copied())
        .collect();
    for p in a.passages.iter().filter(|p| cited.contains(&p.number)) {
        outln!(
            "[{}] {} [bytes {}..{}] {:.3}  {}",
            p.number,
            p.id,
            p.start,
            p.end,
            p.score,
            p.title.as_deref().unwrap_or("")
        );
        outln!("     {}", p.text);
    }
    Ok(ExitCode::SUCCESS)
}
