//! The recommender's commands: `interactions ingest`, `rank train`, `recommend`,
//! `experiments report` and `feedback export` (editors' decisions as golden data).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};
use signaldesk::store::AnyStore;
use signaldesk::Config;

use super::output::{open_output, Progress};

#[derive(Subcommand)]
pub enum FeedbackCommand {
    /// Write editors' tag decisions (data_dir/editorial.jsonl) as golden data.
    ///
    /// One line per reviewed item of store.collection, in the tagging eval's test format:
    /// {"id", "title", "body", "labels", "rejected", "added", "unreviewed", "editors"}, where
    /// labels are the labels as decided: the item's model tags minus the ones editors rejected,
    /// plus the ones they added (the latest decision per label counts); a partly reviewed
    /// item's model tags nobody judged stay, named in "unreviewed". `eval tagging --test FILE`
    /// reads it as it is.
    Export {
        /// The output format (only tagging-gold so far).
        #[arg(long, value_enum, default_value = "tagging-gold")]
        format: ExportFormat,
        /// Where to write the JSONL ("-" for stdout).
        #[arg(long, short)]
        output: PathBuf,
    },
}

/// What `feedback export` writes.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ExportFormat {
    /// The tagging eval's test format.
    TaggingGold,
}

#[derive(Subcommand)]
pub enum InteractionsCommand {
    /// Add interactions from a file to the log (data_dir/interactions.redb, redb).
    ///
    /// CSV with a header or JSONL; fields user, item, event (view, click, like, rating, ...),
    /// value (a rating's stars), timestamp (Unix seconds, RFC 3339 or YYYY-MM-DD). MovieLens'
    /// userId, movieId, rating, timestamp load as they are. Re-ingesting adds nothing twice. Bad
    /// lines go to stderr and the rejects file with their line and reason; the run then exits 1.
    Ingest {
        /// The file (.csv or .jsonl).
        file: PathBuf,
        /// Where rejected lines go (JSONL: line, reason).
        #[arg(long, default_value = "interactions-rejects.jsonl")]
        rejects: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum RankCommand {
    /// Learn the blend from the interaction log alone and save it (rank.model, versioned).
    ///
    /// An inner temporal split of the log (each user's latest 20% of positives, users with at
    /// least 5) gives clicks; the candidates the recommender proposes from the earlier part are
    /// the examples, trained pairwise (logistic loss on feature differences).
    Train {
        /// Leave these features out (e.g. tag_overlap).
        #[arg(long, value_delimiter = ',')]
        drop_features: Vec<String>,
        /// Write the model here instead of rank.model.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

#[derive(Args)]
pub struct RecommendArgs {
    /// The user to recommend to.
    #[arg(long)]
    user: String,
    /// Items to return.
    #[arg(long, short, default_value_t = 10)]
    k: usize,
    /// "More like this": recommend around this item instead of the user's profile.
    #[arg(long)]
    seed: Option<String>,
    /// Serve through this experiment's variants.
    #[arg(long)]
    experiment: Option<String>,
    /// Rank with this instead of the blend (ignored inside an experiment).
    #[arg(long, value_enum)]
    ranker: Option<signaldesk::rank::recommender::RankerKind>,
    /// Print JSON (items with features and contributions) instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum ExperimentsCommand {
    /// Per-variant exposures, clicks, CTR with a 95% interval, the difference to control with
    /// its interval, and a sample-ratio-mismatch check, from the exposure log joined with later
    /// interactions (a click: a positive engagement with a shown item within
    /// rank.attribution_window_hours).
    Report {
        /// Only this experiment.
        #[arg(long)]
        experiment: Option<String>,
        /// The exposure log (default rank.exposures).
        #[arg(long)]
        exposures: Option<PathBuf>,
        /// Print the readouts as JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Estimate a ranker's clicks per list before serving it, from the exploring variants'
    /// exposures (`explore = { epsilon, pool }` in experiments.toml) and the clicks that
    /// followed: inverse propensity scoring (IPS) and its self-normalised form (SNIPS) under
    /// the item-position click model, with 95% bootstrap intervals and the effective sample
    /// size. The ranker is replayed over each logged pool; deterministic lists are skipped (they
    /// give no support to another order). The readout says when the log cannot support the
    /// estimate.
    Estimate {
        /// The ranker to estimate.
        #[arg(long, value_enum)]
        policy: signaldesk::rank::recommender::RankerKind,
        /// The blend model to estimate with `--policy blend` (default rank.model).
        #[arg(long)]
        model: Option<PathBuf>,
        /// The exposure log (default rank.exposures).
        #[arg(long)]
        exposures: Option<PathBuf>,
        /// Print the estimate as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `signaldesk interactions ...`.
pub fn interactions(config: &Config, cmd: InteractionsCommand) -> Result<ExitCode> {
    let InteractionsCommand::Ingest { file, rejects } = cmd;
    super::runtime()?.block_on(interactions_ingest(config, &file, &rejects))
}

/// `signaldesk rank ...`.
pub async fn rank(config: &Config, cmd: RankCommand) -> Result<ExitCode> {
    let RankCommand::Train {
        drop_features,
        output,
    } = cmd;
    rank_train(config, &drop_features, output).await
}

/// `signaldesk experiments ...`.
pub fn experiments(config: &Config, cmd: ExperimentsCommand) -> Result<ExitCode> {
    // With a stream, the logs read are copies of the shared ones (every replica's lists and
    // users' events), brought up to date first.
    if config.stream.enabled() {
        let (ExperimentsCommand::Report { exposures, .. }
        | ExperimentsCommand::Estimate { exposures, .. }) = &cmd;
        let paths = signaldesk::rank::service::RankPaths::of(config);
        let exposures = exposures.clone().unwrap_or(paths.exposures);
        use signaldesk::stream::logs::{sync_configured, SharedLog};
        super::runtime()?.block_on(sync_configured(
            config,
            &[
                (SharedLog::Exposures, &exposures),
                (SharedLog::Interactions, &paths.interactions),
            ],
        ))?;
    }
    match cmd {
        ExperimentsCommand::Report {
            experiment,
            exposures,
            json,
        } => experiments_report(config, experiment, exposures, json),
        ExperimentsCommand::Estimate {
            policy,
            model,
            exposures,
            json,
        } => experiments_estimate(config, policy, model, exposures, json),
    }
}

fn experiments_estimate(
    config: &Config,
    policy: signaldesk::rank::recommender::RankerKind,
    model: Option<PathBuf>,
    exposures: Option<PathBuf>,
    json: bool,
) -> Result<ExitCode> {
    let e = signaldesk::rank::service::estimate_policy(
        config,
        policy,
        model.as_deref(),
        exposures.as_deref(),
    )?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&e)?);
    } else {
        outln!(
            "{}: {} exploring lists ({} other exposures skipped), {} matching (item, position) pairs",
            e.policy, e.lists, e.skipped, e.matched
        );
        outln!("  clicks per list   estimate   95% CI");
        outln!(
            "  SNIPS             {:>8.4}   [{:.4}, {:.4}]",
            e.snips,
            e.snips_low,
            e.snips_high
        );
        outln!(
            "  IPS               {:>8.4}   [{:.4}, {:.4}]",
            e.ips,
            e.ips_low,
            e.ips_high
        );
        outln!("  logged (served)   {:>8.4}", e.logged);
        outln!(
            "  effective sample size {:.0} at the least supported position",
            e.effective_sample_size
        );
    }
    if let Some(w) = &e.warning {
        eprintln!("experiments estimate: {w}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `signaldesk feedback ...`.
pub async fn feedback(config: &Config, cmd: FeedbackCommand) -> Result<ExitCode> {
    let FeedbackCommand::Export { format, output } = cmd;
    feedback_export(config, format, &output).await
}

async fn interactions_ingest(
    config: &Config,
    file: &Path,
    rejects_path: &Path,
) -> Result<ExitCode> {
    use signaldesk::rank::interactions::{write_rejects, InteractionStore};
    use signaldesk::rank::service::{read_events, RankPaths};
    let (events, rejects, checked) = read_events(&AnyStore::open(config)?, config, file).await?;
    if !checked {
        eprintln!(
            "interactions: no stored collection yet, so items are not checked against one (ingest content first to check them)"
        );
    }
    // With a stream, the events go to every replica through it; the log is a copy of it.
    if config.stream.enabled() {
        let stream = signaldesk::stream::EventStream::connect(&config.stream).await?;
        let published = stream.publish_interactions(&events).await?;
        eprintln!(
            "interactions: published {} to the stream ({} already there)",
            published.published, published.duplicates
        );
    }
    let store = InteractionStore::open(&RankPaths::of(config).interactions)?;
    let mut added = 0;
    for batch in events.chunks(10_000) {
        added += store.append(batch)?;
    }
    for r in &rejects {
        eprintln!("{}:{}: {}", file.display(), r.line, r.reason);
    }
    if !rejects.is_empty() {
        write_rejects(rejects_path, file, &rejects)?;
    }
    outln!(
        "{} interactions read, {added} new, {} already in the log, {} rejected{} ({})",
        events.len(),
        events.len() - added,
        rejects.len(),
        if rejects.is_empty() {
            String::new()
        } else {
            format!(" (see {})", rejects_path.display())
        },
        store.path().display()
    );
    Ok(if rejects.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn rank_train(config: &Config, drop: &[String], output: Option<PathBuf>) -> Result<ExitCode> {
    let paths = signaldesk::rank::service::RankPaths::of(config);
    let store = AnyStore::open(config)?;
    use signaldesk::stream::logs::{sync_configured, SharedLog};
    sync_configured(config, &[(SharedLog::Interactions, &paths.interactions)]).await?;
    let bar = Progress::new("rank train", None, "users");
    let drop: Vec<&str> = drop.iter().map(String::as_str).collect();
    let trained = signaldesk::rank::service::train(&store, config, &drop, output, |d, _| {
        bar.set_position(d as u64)
    })
    .await?;
    bar.finish();
    let model = &trained.model;
    outln!(
        "blend {} trained on {} ({} items, {} interactions): {}",
        model.version,
        trained.collection,
        trained.items,
        trained.interactions,
        model.training
    );
    for (f, w) in model.features.iter().zip(&model.weights) {
        outln!("  {f:<14} {w:+.4}");
    }
    if let (Some(f), Some(seconds)) = (&model.factors, trained.factor_seconds) {
        outln!(
            "collaborative factors {} ({} items x {}) trained on the whole log in {seconds:.1} s: {}",
            f.version,
            f.items,
            f.dim,
            f.file
        );
    }
    outln!("saved: {}", trained.path.display());
    Ok(ExitCode::SUCCESS)
}

pub async fn recommend(config: &Config, args: RecommendArgs) -> Result<ExitCode> {
    use signaldesk::rank::service::RecommendService;
    let store = AnyStore::open(config)?;
    let service = RecommendService::open(&store, config, true).await?;
    let served = service
        .recommend(
            &args.user,
            args.k,
            args.seed.as_deref(),
            args.experiment.as_deref(),
            args.ranker,
            None,
        )
        .await?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&served)?);
        return Ok(ExitCode::SUCCESS);
    }
    let arm = served
        .assignment
        .as_ref()
        .map(|a| format!(", experiment {} variant {}", a.experiment, a.served))
        .unwrap_or_default();
    outln!(
        "{} for user {} (ranker {}{}{arm}):",
        served.items.len(),
        served.user,
        served.ranker.name(),
        served
            .model_version
            .as_deref()
            .map(|v| format!(" {v}"))
            .unwrap_or_default()
    );
    for (rank, item) in served.items.iter().enumerate() {
        let parts: Vec<String> = item
            .contributions
            .iter()
            .filter(|(k, _)| *k != "relevance")
            .map(|(k, v)| format!("{k} {v:+.3}"))
            .collect();
        outln!(
            "{:>3}. {:<12} {:>8.4}  {}  [{}]",
            rank + 1,
            item.id,
            item.score,
            item.title,
            item.sources.join("+")
        );
        outln!("     why: {}", item.reason);
        if !parts.is_empty() {
            outln!("     {}", parts.join(", "));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn experiments_report(
    config: &Config,
    only: Option<String>,
    exposures: Option<PathBuf>,
    json: bool,
) -> Result<ExitCode> {
    use signaldesk::rank::service::{experiment_readouts, ExperimentReadout};
    let readouts = experiment_readouts(config, only.as_deref(), exposures.as_deref())?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&readouts)?);
        return Ok(ExitCode::SUCCESS);
    }
    for r in &readouts {
        match r {
            ExperimentReadout::Split(r) => print_split(r)?,
            ExperimentReadout::Interleave(r) => {
                outln!(
                    "experiment {} (interleaving {} against {}): {} lists, {} users",
                    r.experiment,
                    r.b,
                    r.a,
                    r.exposures,
                    r.users
                );
                outln!(
                    "  wins {} {}, {} {}, ties {}; {} preferred in {:.1}% of decided lists [{:.1}%, {:.1}%], sign test p {:.4}",
                    r.a,
                    r.wins_a,
                    r.b,
                    r.wins_b,
                    r.ties,
                    r.b,
                    100.0 * r.preference_b,
                    100.0 * r.preference_low,
                    100.0 * r.preference_high,
                    r.p_value
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_split(r: &signaldesk::rank::experiments::Readout) -> Result<()> {
    outln!("experiment {} (control {}):", r.experiment, r.control);
    outln!(
        "  {:<12} {:>9} {:>7} {:>7} {:>8} {:>19} {:>9} {:>21}",
        "variant",
        "exposures",
        "users",
        "clicks",
        "CTR",
        "95% CI",
        "diff",
        "95% CI"
    );
    for a in &r.arms {
        let diff = a.diff.map(|d| format!("{d:+.4}")).unwrap_or("-".into());
        let ci = match (a.diff_low, a.diff_high) {
            (Some(l), Some(h)) => format!("[{l:+.4}, {h:+.4}]"),
            _ => "-".into(),
        };
        outln!(
            "  {:<12} {:>9} {:>7} {:>7} {:>8.4} {:>19} {:>9} {:>21}",
            a.variant,
            a.exposures,
            a.users,
            a.clicks,
            a.ctr,
            format!("[{:.4}, {:.4}]", a.ctr_low, a.ctr_high),
            diff,
            ci
        );
    }
    outln!(
        "  sample ratio: chi2 {:.2}, p {:.4}{}",
        r.srm_chi2,
        r.srm_p,
        if r.srm {
            "  MISMATCH: users are not split as allocated; do not trust the differences"
        } else {
            ""
        }
    );
    Ok(())
}

async fn feedback_export(config: &Config, format: ExportFormat, output: &Path) -> Result<ExitCode> {
    use signaldesk::enrich::editorial::{export_tagging_gold, read_log};
    let ExportFormat::TaggingGold = format;
    let log = signaldesk::enrich::editorial::log_path(config);
    let decisions = read_log(&log)?;
    if decisions.is_empty() {
        eprintln!(
            "feedback export: {} holds no decisions; nothing to export",
            log.display()
        );
    }
    let store = AnyStore::open(config)?;
    let mut out = open_output(output)?;
    let summary =
        export_tagging_gold(&store, &config.store.collection, &decisions, &mut out).await?;
    out.flush()?;
    eprintln!(
        "feedback export: {} items from {} decisions ({} partly reviewed: their unreviewed model tags are kept, listed under `unreviewed`){}{}",
        summary.items,
        summary.decisions,
        summary.partly_reviewed,
        if summary.missing > 0 {
            format!("; {} reviewed items are no longer stored", summary.missing)
        } else {
            String::new()
        },
        if summary.empty > 0 {
            format!("; {} items were left with no label (every tag rejected) and are not written", summary.empty)
        } else {
            String::new()
        }
    );
    Ok(ExitCode::SUCCESS)
}
