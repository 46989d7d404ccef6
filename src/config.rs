//! One typed configuration for every part of signaldesk.
//!
//! Layers, later wins: built-in defaults (which run fully offline: local models, embedded store),
//! then `signaldesk.toml` (or the file named by `--config` / `SIGNALDESK_CONFIG`), then environment
//! variables `SIGNALDESK_<SECTION>__<KEY>` (double underscore for nesting, as Qdrant does), e.g.
//! `SIGNALDESK_EMBED__BATCH_SIZE=16` or `SIGNALDESK_MODELS_DIR=/opt/models`.
//!
//! Unknown keys are errors, in the file and in the environment alike: a typo that silently falls
//! back to a default is the worst kind of configuration bug.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Prefix of every environment override.
pub const ENV_PREFIX: &str = "SIGNALDESK_";

/// Environment variables with the prefix that are not configuration keys: the CLI's
/// `--config` and `--log-format`, and the log filter.
const RESERVED_ENV: &[&str] = &["CONFIG", "LOG", "LOG_FORMAT"];

/// Environment variables with the prefix that tests and tools use for their own purposes.
const RESERVED_ENV_PREFIXES: &[&str] = &["TEST_"];

/// Errors from loading configuration; each names the file or variable at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid environment override {var}: {message}")]
    Env { var: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole configuration. Relative paths are resolved against the working directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where `scripts/fetch-models.sh` unpacks models; model names are looked up here.
    pub models_dir: PathBuf,
    /// Where persistent state lives (the embedded vector store, ingest state).
    pub data_dir: PathBuf,
    /// Where rebuildable caches live (embeddings, LLM responses, downloaded wheels).
    pub cache_dir: PathBuf,
    /// The versioned prompt templates (`tag.v2.md`, `summarize.v1.md`).
    pub prompts_dir: PathBuf,
    pub embed: EmbedConfig,
    pub chunk: ChunkConfig,
    pub ingest: IngestConfig,
    pub store: StoreConfig,
    pub search: SearchConfig,
    pub llm: LlmConfig,
    pub enrich: EnrichConfig,
    pub rank: RankConfig,
    pub answer: AnswerConfig,
    pub api: ApiConfig,
    pub stream: StreamConfig,
}

/// Scale-out on NATS JetStream. `url` empty (the default) is the single process: nothing below
/// is read. Set, `signaldesk ingest --via-stream` and `POST /v1/content` publish content events,
/// and `signaldesk worker` processes (any number of them, on any machine) share the work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// NATS server(s), comma-separated (`nats://127.0.0.1:4222,nats://10.0.0.2:4222`); empty:
    /// no stream, everything in process.
    pub url: String,
    /// Prefix of subjects (`<prefix>.content`) and, upper-cased, of stream names
    /// (`<PREFIX>_CONTENT`), so several deployments can share one NATS cluster.
    pub prefix: String,
    /// Copies of each stream on different NATS servers (1 for one server; 3 on a three-node
    /// cluster survives the loss of one).
    pub replicas: usize,
    /// Seconds a worker has to acknowledge a delivered event before NATS gives it to another
    /// worker (a killed worker's events come back after this).
    pub ack_wait_s: u64,
    /// Deliveries of one event before it is moved to the dead letters (`<prefix>.dead.content`)
    /// instead of being retried.
    pub max_deliver: i64,
    /// Events a worker takes per fetch: embedded together, like `ingest.batch_items`.
    pub fetch_batch: usize,
    /// Seconds within which a republished event (same item id and content) is dropped by NATS's
    /// de-duplication (`Nats-Msg-Id`).
    pub duplicate_window_s: u64,
    /// Seconds to wait for a server when connecting and for each publish acknowledgement.
    pub timeout_s: u64,
    /// Seconds a publish that was not acknowledged is sent again (same message id, so never
    /// stored twice) while a NATS cluster fails over, before the publisher gives up.
    pub publish_retry_s: u64,
    /// Workers enrich what they ingest (each ingested item becomes an enrich event the workers
    /// share) and take `signaldesk enrich --via-stream` work; off, workers only ingest and refuse
    /// enrich events (to the dead letters, with the reason).
    pub enrich: bool,
    /// The tagger workers tag with (`--tagger`'s values), over `enrich.knn.memory` and
    /// `api.taxonomy`, the API's own settings.
    pub tagger: TaggerKind,
    /// Workers also summarize the items they enrich (with `llm.*`: seconds per item on the local
    /// model).
    pub summaries: bool,
}

impl StreamConfig {
    /// Whether events go through JetStream (`url` set).
    pub fn enabled(&self) -> bool {
        !self.url.trim().is_empty()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.prefix.is_empty()
            || !self
                .prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return invalid(format!(
                "stream.prefix must be letters, digits, '_' or '-' (it names subjects and streams), got {:?}",
                self.prefix
            ));
        }
        if !(1..=5).contains(&self.replicas) {
            return invalid(format!(
                "stream.replicas must be 1 to 5 (JetStream's limit), got {}",
                self.replicas
            ));
        }
        if self.max_deliver < 1 || self.ack_wait_s == 0 || self.fetch_batch == 0 {
            return invalid(
                "stream.max_deliver, stream.ack_wait_s and stream.fetch_batch must be at least 1"
                    .into(),
            );
        }
        if self.timeout_s == 0 || self.duplicate_window_s == 0 {
            return invalid(
                "stream.timeout_s and stream.duplicate_window_s must be at least 1".into(),
            );
        }
        Ok(())
    }
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            prefix: "signaldesk".into(),
            replicas: 1,
            ack_wait_s: 60,
            max_deliver: 5,
            fetch_batch: 64,
            duplicate_window_s: 120,
            timeout_s: 10,
            publish_retry_s: 30,
            enrich: true,
            tagger: TaggerKind::Knn,
            summaries: false,
        }
    }
}

/// Claims verified over the archive (`signaldesk verify`, `POST /v1/verify`, `eval grounded`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnswerConfig {
    /// The collection searched (empty: `store.collection`).
    pub collection: String,
    /// Items retrieved for a claim (hybrid search with `search.*`).
    pub k: usize,
    /// Smallest verifier probability (of SUPPORT or CONTRADICT) for an item to be named as
    /// evidence; when no item reaches it the verdict is NOT_ENOUGH_INFO. `eval grounded` tunes
    /// it on the tuning claims and prints the value to set here.
    pub threshold: f32,
    /// Weight of the search's order: an item's verifier probability is multiplied by
    /// `rank_decay^(rank − 1)` before it is compared with `threshold` (1: the order is ignored).
    /// `eval grounded` tunes it with the threshold on the tuning claims.
    pub rank_decay: f32,
    /// Rationale sentences cited per evidence item (SciFact's scorer reads at most 3).
    pub rationale_sentences: usize,
    /// Most items named as evidence, strongest first (most of SciFact's claims are decided by
    /// one abstract; naming every item over the threshold costs precision).
    pub max_evidence: usize,
    /// The labelled claims the verifier is trained on at first use (SciFact's JSONL format),
    /// and the corpus their evidence ids point to (BEIR `corpus.jsonl(.gz)`).
    pub training_claims: PathBuf,
    pub training_corpus: PathBuf,
    /// Questions answered from the archive (`signaldesk ask`, `POST /v1/ask`).
    pub ask: AskConfig,
}

/// How `ask` answers: which passages it reads, when it says "not in the archive", and how the
/// LLM (when one is configured) composes the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AskConfig {
    /// Passages (sentences of the retrieved items, best first) put before the LLM and citable.
    pub passages: usize,
    /// Most passages taken from one item, so one long item cannot fill the context.
    pub passages_per_item: usize,
    /// Most LLM tokens (tiktoken o200k, as prompt budgets count) of the passages together: a
    /// passage that would pass it is left out for the next that fits. It bounds the prompt the
    /// LLM reads before its first word (the local model reads about 440 tokens/s on 2 cores).
    pub passage_tokens: usize,
    /// Smallest relevance (the verifier's rationale probability) of the best passage for the
    /// archive to answer at all; below it the answer is "not in the archive".
    pub threshold: f32,
    /// Most statements of an extractive answer (no LLM, or the LLM failed): the best passages
    /// that reach `threshold` and `extractive_relative` of the best one's relevance.
    pub extractive_statements: usize,
    /// A passage quoted by an extractive answer is at least this share of the best passage's
    /// relevance: a weak runner-up is context for the LLM, not a statement.
    pub extractive_relative: f32,
    /// Compose with the LLM (`llm.*`) when one is configured; false answers extractively.
    pub llm: bool,
    /// `prompts/ask.v{N}.md`.
    pub prompt_version: u32,
    /// Longest LLM answer, in tokens.
    pub max_answer_tokens: usize,
}

impl Default for AskConfig {
    fn default() -> Self {
        Self {
            passages: 6,
            passages_per_item: 2,
            passage_tokens: 200,
            // Over the quickstart sample: questions it answers scored 0.53 to 0.86, questions
            // about sport, cooking and geography 0.04 to 0.31.
            threshold: 0.4,
            extractive_statements: 3,
            extractive_relative: 0.8,
            llm: true,
            prompt_version: 1,
            max_answer_tokens: 400,
        }
    }
}

impl AnswerConfig {
    /// The collection claims and questions are answered from: `answer.collection`, else the
    /// caller's default (the store's or the server's collection).
    pub fn collection_or(&self, default: &str) -> String {
        if self.collection.is_empty() {
            default.to_string()
        } else {
            self.collection.clone()
        }
    }
}

impl Default for AnswerConfig {
    fn default() -> Self {
        Self {
            collection: String::new(),
            k: 5,
            // Both tuned by `eval grounded` on the 647 tuning claims (verifier v2, one evidence
            // item): label-only F1 0.330 on the evaluation claims, 0.238 with the order ignored.
            threshold: 0.4,
            rank_decay: 0.5,
            rationale_sentences: 3,
            max_evidence: 1,
            training_claims: PathBuf::from("golden-datasets/scifact-claims/tune.jsonl"),
            training_corpus: PathBuf::from("golden-datasets/scifact/corpus.jsonl.gz"),
            ask: AskConfig::default(),
        }
    }
}

/// The HTTP API (`signaldesk serve`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Where it listens.
    pub addr: String,
    /// API keys, stored as the hex sha256 of the key (`signaldesk serve --hash-key KEY` prints
    /// it): `[[api.keys]] name = "cms", sha256 = "...", scopes = ["read", "write"]`.
    pub keys: Vec<ApiKey>,
    /// Taggers opened at start (`POST /v1/tag` items choose with `tagger`); the first is the
    /// default.
    pub taggers: Vec<TaggerKind>,
    /// The taxonomy tags are labelled from and zeroshot tags against (empty: none).
    pub taxonomy: PathBuf,
    /// Most items in one `POST /v1/tag` batch.
    pub max_batch: usize,
    /// Tagging requests run at once; beyond it the route answers 429 with Retry-After at once.
    pub tag_concurrency: usize,
    /// Largest request body, in bytes.
    pub body_limit_bytes: usize,
    /// A request running longer is answered 504 with the JSON error.
    pub timeout_s: u64,
    /// Requests per second each API key may make (sustained; 0: no limit). Beyond it: 429 with
    /// Retry-After.
    pub rate_per_key: u32,
    /// Requests a key may make at once above the sustained rate.
    pub rate_burst: u32,
    /// Open the configured LLM (llm.*) at start: `POST /v1/summarize`, summaries in enrichment
    /// jobs, and, when it is the local model, `/v1/chat/completions` behind the API keys.
    pub llm: bool,
    /// Rebuild the recommender's popularity and co-occurrence from the interaction log this
    /// often (seconds) when events were recorded since (0: only when content changes). A user's
    /// own events count at once regardless.
    pub refresh_s: u64,
    /// Requests computing at once (embedding, searching, tagging, ranking: CPU-bound); 0: one
    /// per core. More would only contend for the cores and hold more memory.
    pub workers: usize,
    /// Requests that may wait for a worker; beyond them a request is answered 429 at once, so a
    /// burst never becomes an unbounded queue.
    pub queue: usize,
    /// Most query texts of concurrent requests embedded in one forward pass.
    pub embed_batch: usize,
    /// A development run: the server starts even with a key whose hash is the documented
    /// example key's (`dev-key-change-me`, in deploy/signaldesk.toml), which it otherwise
    /// refuses, since anyone who read the docs holds that key.
    pub development: bool,
    /// Serve `/metrics` on this address instead of the API's (empty: on the API's listener).
    /// A separate listener lets the scrape port stay on an internal network while the API is
    /// exposed; the API's listener then answers `/metrics` with 404.
    pub metrics_addr: String,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:8090".into(),
            keys: Vec::new(),
            taggers: vec![TaggerKind::Knn],
            taxonomy: PathBuf::new(),
            max_batch: 100,
            tag_concurrency: 4,
            body_limit_bytes: 4 << 20,
            timeout_s: 30,
            rate_per_key: 100,
            rate_burst: 200,
            llm: true,
            refresh_s: 60,
            workers: 0,
            queue: 64,
            embed_batch: 32,
            development: false,
            metrics_addr: String::new(),
        }
    }
}

/// One API key (its hash) and what it may do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    pub name: String,
    /// Hex sha256 of the key.
    pub sha256: String,
    pub scopes: Vec<Scope>,
}

/// What a key may do, scoped by risk: a calling service gets `read` (+ `write` to send content and
/// events), an editor `read` + `write`, an operator `admin`. Deleting content, collection-wide
/// jobs and the raw LLM routes each need their own scope, so a leaked editor's key cannot empty
/// the archive or spend LLM tokens freely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Search, tag, summarize ad-hoc items, the taxonomy, recommendations, stored items.
    Read,
    /// Content in (`POST /v1/content`), users' events and editors' decisions (`POST /v1/feedback`).
    Write,
    /// `DELETE /v1/content/{id}`.
    Delete,
    /// Collection-wide jobs: `POST /v1/enrich` (tags and summaries over stored items).
    Jobs,
    /// The local model's raw routes: `POST /v1/chat/completions`, `GET /v1/models`.
    Llm,
    /// Everything.
    Admin,
}

/// Recommendation: how interactions become candidates, features, a learned blend and a ranked,
/// re-ranked list (`signaldesk recommend`, `rank train`, `eval recommend`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RankConfig {
    /// The content collection recommended from (empty: `store.collection`).
    pub collection: String,
    /// A `rating` event at or above this value is a positive; below it the item is only "seen".
    pub positive_rating: f64,
    /// Weight of each event type in a user's profile and in co-occurrence and popularity counts
    /// (`rating` events use 1 when positive); an event type not listed weighs 0 (seen only).
    pub event_weights: std::collections::BTreeMap<String, f64>,
    /// Event names received events may use, beside those of `event_weights` and `rating`; any
    /// other name is refused (400 naming `event`, a reject line in `interactions ingest`), so a
    /// typo (`clik`) cannot slip into the log as an event that weighs nothing.
    pub events: Vec<String>,
    /// Half-life, in days before the user's latest event, of an engagement's weight in the
    /// user's dense and tag profiles.
    pub profile_half_life_days: f64,
    /// Half-life, in days before "now", of an engagement's weight in trending popularity (a
    /// feature, and the popularity source's order when set); 0: plain counts.
    pub popularity_half_life_days: f64,
    /// Half-life of freshness, in days since an item's `published_at`.
    pub freshness_half_life_days: f64,
    /// Candidates taken from each source before merging.
    pub candidates_per_source: usize,
    /// Co-occurring items kept per item (the strongest, by cosine-normalised count; 300 keeps
    /// MovieLens' co-occurrence within 0.001 nDCG@10 of keeping all).
    pub cooccurrence_neighbours: usize,
    /// A user's most recent engagements that seed co-occurrence candidates (0: all of them;
    /// on MovieLens all gives co-occurrence nDCG@10 0.110, the latest 50 only 0.100).
    pub cooccurrence_history: usize,
    /// The dense and more-like-this sources find the nearest unseen items by scanning the
    /// catalogue's vectors (held in memory for the features anyway) when it has at most this
    /// many items, and ask the vector store above that (0: always the store). The store cannot
    /// exclude the items a user has seen, so for a heavy user it must return thousands of hits,
    /// each decoded from its stored payload (see `bench recommend` in the README).
    pub dense_scan_max_items: usize,
    /// Numeric payload fields (top level or `metadata.KEY`) added as features, missing = 0.
    pub numeric_fields: Vec<String>,
    /// The learned blend written by `rank train` (relative paths are under `data_dir`).
    pub model: PathBuf,
    /// Business objectives, diversity and hard filters applied after the blend.
    pub objectives: ObjectivesConfig,
    /// Experiments and their variants (relative paths are taken as given, from the working
    /// directory); re-read when the file changes, so a ramp needs no restart.
    pub experiments: PathBuf,
    /// Where every recommendation is logged as an exposure (JSONL; under `data_dir`).
    pub exposures: PathBuf,
    /// A click counts for an exposure when the user engages with a shown item within this
    /// many hours after it.
    pub attribution_window_hours: f64,
    /// Collaborative factors (implicit ALS) trained from the log with the other signals: a
    /// candidate source and the `factor` feature (`dim` 0 turns them off).
    pub factors: FactorConfig,
    /// What the user's latest engagements add: the sequence features.
    pub sequence: SequenceConfig,
}

impl RankConfig {
    /// Every event name a received event may use: `events`, the names of `event_weights`, and
    /// `rating`.
    pub fn event_vocabulary(&self) -> Vec<String> {
        let mut names: std::collections::BTreeSet<String> = self.events.iter().cloned().collect();
        names.extend(self.event_weights.keys().cloned());
        names.insert("rating".into());
        names.into_iter().collect()
    }
}

impl Default for RankConfig {
    fn default() -> Self {
        let event_weights = [("view", 0.5), ("click", 1.0), ("like", 2.0), ("share", 2.0)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        Self {
            collection: String::new(),
            positive_rating: 4.0,
            event_weights,
            events: ["skip", "dislike", "complete", "purchase"]
                .map(str::to_string)
                .to_vec(),
            profile_half_life_days: 180.0,
            popularity_half_life_days: 0.0,
            freshness_half_life_days: 3650.0,
            candidates_per_source: 200,
            cooccurrence_neighbours: 300,
            cooccurrence_history: 0,
            numeric_fields: Vec::new(),
            model: PathBuf::from("rank/blend.json"),
            objectives: ObjectivesConfig::default(),
            experiments: PathBuf::from("experiments.toml"),
            exposures: PathBuf::from("exposures.jsonl"),
            attribution_window_hours: 24.0,
            dense_scan_max_items: 50_000,
            factors: FactorConfig::default(),
            sequence: SequenceConfig::default(),
        }
    }
}

/// The sequence features (`rank.sequence`): a candidate against the user's latest engagements
/// rather than their whole history — its similarity to the last `length` items in content and
/// factor space and its co-occurrence with them — and how recently the user engaged with its
/// tags and its source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SequenceConfig {
    /// How many of the latest engagements count as the user's recent sequence.
    pub length: usize,
    /// Half-life, in days, of `tag_recency` and `source_recency` (1 right after an engagement
    /// with the tag or source, ½ this many days later).
    pub recency_half_life_days: f64,
}

impl Default for SequenceConfig {
    fn default() -> Self {
        Self {
            length: 10,
            recency_half_life_days: 30.0,
        }
    }
}

/// How collaborative factors are trained (`rank.factors`): implicit-feedback ALS (Hu, Koren &
/// Volinsky 2008), an engaged user–item pair weighing `1 + alpha`, every other pair 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FactorConfig {
    /// Factors per user and item (0: no collaborative factors).
    pub dim: usize,
    /// Alternating rounds (one pass over users and one over items each).
    pub iterations: usize,
    /// λ, the L2 penalty on every vector.
    pub regularization: f32,
    /// α: an engaged pair's confidence is `1 + alpha`.
    pub alpha: f32,
    /// Seed of the initial vectors: training is deterministic for a seed.
    pub seed: u64,
}

impl Default for FactorConfig {
    /// The settings of the `implicit` library's `AlternatingLeastSquares` that the
    /// recommendation suite's reference runs: 32 factors, λ 0.01, α 1, 15 rounds.
    fn default() -> Self {
        Self {
            dim: 32,
            iterations: 15,
            regularization: 0.01,
            alpha: 1.0,
            seed: 0,
        }
    }
}

/// What the re-ranking stage does after the learned blend: business rules, diversity and hard
/// filters. Each item's response says what every objective added or took away.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObjectivesConfig {
    /// Maximal marginal relevance: weight on relevance, 1 = no diversity.
    pub mmr_lambda: f32,
    /// Added to the score of items whose payload field equals a value.
    pub boosts: Vec<Boost>,
    /// Items published more than this many days before now are demoted (0: none are).
    pub demote_older_than_days: f64,
    /// Taken from a demoted item's score.
    pub demote_by: f32,
    /// At most this many items from one `source` in a list (0: no cap).
    pub max_per_source: usize,
    /// Items carrying any of these tags are never recommended.
    pub excluded_tags: Vec<String>,
}

impl Default for ObjectivesConfig {
    fn default() -> Self {
        Self {
            mmr_lambda: 1.0,
            boosts: Vec::new(),
            demote_older_than_days: 0.0,
            demote_by: 0.1,
            max_per_source: 0,
            excluded_tags: Vec::new(),
        }
    }
}

/// A business boost: `field` (`content_type`, `source`, or any payload key) equal to `value`
/// adds `by` to the item's score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Boost {
    pub field: String,
    pub value: String,
    pub by: f32,
}

/// Enrichment: how content is tagged against a taxonomy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct EnrichConfig {
    pub knn: KnnConfig,
    pub zeroshot: ZeroShotConfig,
    pub head: HeadConfig,
    pub ensemble: EnsembleConfig,
    pub llm: LlmTagConfig,
    pub summary: SummaryConfig,
}

/// Summaries: their word limits (the editorial format).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SummaryConfig {
    /// Longest summary, in words.
    pub max_words: usize,
    /// Longest standfirst (the one-line teaser under a headline), in words.
    pub standfirst_words: usize,
    /// Version of `prompts/summarize.vN.md`.
    pub prompt_version: u32,
    /// Budget of one rendered prompt, in LLM tokens: a longer item is summarized in parts
    /// (map), then from the parts' summaries (reduce).
    pub max_prompt_tokens: usize,
    /// Most tokens of one answer.
    pub max_answer_tokens: usize,
}

impl Default for SummaryConfig {
    fn default() -> Self {
        Self {
            max_words: 60,
            standfirst_words: 25,
            prompt_version: 2,
            max_prompt_tokens: 1500,
            max_answer_tokens: 256,
        }
    }
}

/// The LLM tagger: the model picks labels from candidates retrieved for the item (kNN's votes
/// and the taxonomy's nearest concepts), with labelled neighbours as examples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmTagConfig {
    /// Version of `prompts/tag.vN.md`.
    pub prompt_version: u32,
    /// Most candidate labels offered (the schema's enum is exactly them).
    pub candidates: usize,
    /// Labelled neighbours shown as examples.
    pub examples: usize,
    /// Most labels the model may pick.
    pub max_labels: usize,
    /// Budget of the rendered prompt, in LLM tokens (the item's text is cut to fit).
    pub max_prompt_tokens: usize,
    /// Most tokens of the answer.
    pub max_answer_tokens: usize,
    /// Items whose LLM call is in flight at once (`--concurrency`).
    pub concurrency: usize,
}

impl Default for LlmTagConfig {
    fn default() -> Self {
        Self {
            prompt_version: 2,
            candidates: 10,
            examples: 3,
            max_labels: 3,
            max_prompt_tokens: 1000,
            max_answer_tokens: 64,
            concurrency: 8,
        }
    }
}

/// The ensemble's linear head: one logistic output per label over the item's embedding, trained
/// in-process on the labelled memory's stored vectors (a new taxonomy needs only new data).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeadConfig {
    /// Passes over the training vectors.
    pub epochs: usize,
    /// Adam's step size.
    pub learning_rate: f64,
    /// Inverse strength of the L2 penalty, as scikit-learn's `C`: each label's objective is
    /// C · Σ cross-entropy + ½‖w‖². Larger fits the training data more closely.
    pub c: f64,
    /// Examples per optimisation step.
    pub batch_size: usize,
    /// Seed of the example order: the same data and settings give the same head.
    pub seed: u64,
}

impl Default for HeadConfig {
    fn default() -> Self {
        // Chosen on Reuters ModApte's validation split (eval/README.md).
        Self {
            epochs: 100,
            learning_rate: 0.1,
            c: 100.0,
            batch_size: 128,
            seed: 0,
        }
    }
}

/// The ensemble tagger: the head's probabilities and kNN's vote shares (and the LLM's picks,
/// when it is consulted) averaged with these weights; a label is kept at `threshold` or above.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnsembleConfig {
    /// Weight of the linear head's probability.
    pub head_weight: f32,
    /// Weight of the kNN vote share (`enrich.knn` gives k and the weighting).
    pub knn_weight: f32,
    /// Weight of the LLM's pick (1 for a picked label, 0 otherwise); 0 leaves the LLM out
    /// (no calls). When a call fails after its retries, the item is tagged by the others and
    /// marked with a `fallback_reason`.
    pub llm_weight: f32,
    /// Smallest combined score to keep a label.
    pub threshold: f32,
    /// Labels every item gets at least (the best-scored), even below the threshold.
    pub min_labels: usize,
    /// Most labels per item (unset: as many as reach the threshold). An exclusive taxonomy
    /// sets 1.
    pub max_labels: Option<usize>,
}

impl Default for EnsembleConfig {
    fn default() -> Self {
        // Tuned on Reuters ModApte's validation split for micro-F1 (eval/README.md).
        Self {
            head_weight: 0.5,
            knn_weight: 0.5,
            llm_weight: 0.0,
            threshold: 0.45,
            min_labels: 1,
            max_labels: None,
        }
    }
}

/// The zero-shot tagger: the concepts whose label and definition are nearest to the item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZeroShotConfig {
    /// Smallest cosine similarity between item and concept to keep the concept.
    pub threshold: f32,
    /// Most labels per item.
    pub max_labels: usize,
    /// Labels every item gets at least (the nearest), even below the threshold.
    pub min_labels: usize,
    /// Concepts fetched per item before the threshold applies.
    pub candidates: usize,
}

impl Default for ZeroShotConfig {
    fn default() -> Self {
        // Calibrated on Reuters ModApte's validation split for the mean of micro- and macro-F1
        // (eval/README.md); a taxonomy with richer definitions may want its own calibration.
        Self {
            threshold: 0.425,
            max_labels: 3,
            min_labels: 1,
            candidates: 10,
        }
    }
}

/// The kNN tagger: the `k` most similar labelled items vote their labels, each vote weighted by
/// its cosine similarity; a label is kept when its share of the votes reaches `threshold`.
/// `eval tagging` tunes both on a validation split of the training data and prints the values
/// to set here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KnnConfig {
    /// Neighbours that vote.
    pub k: usize,
    /// Smallest share of the similarity-weighted votes a label needs.
    pub threshold: f32,
    /// Labels every item gets at least (the best-voted ones), even below the threshold.
    pub min_labels: usize,
    /// Most labels per item (unset: as many as reach the threshold). An exclusive taxonomy
    /// sets 1.
    pub max_labels: Option<usize>,
    /// How much a neighbour's vote weighs.
    pub weighting: KnnWeighting,
    /// The labelled memory: a collection of items whose `labels` field lists their concept ids
    /// (`signaldesk ingest train.jsonl --collection labelled-memory`).
    pub memory: String,
}

/// A neighbour's vote weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum KnnWeighting {
    /// 1 / (1 - cosine similarity): the nearest neighbours count far more (better on Reuters:
    /// micro/macro-F1 0.8405/0.4254 against 0.8371/0.3987 at the micro-F1 optimum).
    InverseDistance,
    /// The cosine similarity itself.
    Similarity,
}

impl Default for KnnConfig {
    fn default() -> Self {
        // Tuned on Reuters ModApte's validation split for the mean of micro- and macro-F1
        // (eval/README.md).
        Self {
            k: 5,
            threshold: 0.4,
            min_labels: 1,
            max_labels: None,
            weighting: KnnWeighting::InverseDistance,
            memory: "labelled-memory".into(),
        }
    }
}

/// Which embedding implementation runs on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum EmbedBackend {
    /// signaldesk's packed CPU forward pass on the CPU, candle-transformers' BERT on a GPU.
    Auto,
    /// candle-transformers' BERT everywhere (the reference implementation).
    Candle,
}

/// Arithmetic of the embedder's linear layers on the CPU (`embed.precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum EmbedPrecision {
    /// int8 where the CPU has int8 dot products (AVX2 or AVX-512 VNNI), else fp32.
    Auto,
    /// 32-bit floats throughout: the reference the parity check runs.
    Fp32,
    /// int8 weights and activations with int32 accumulation in the linear layers; attention,
    /// LayerNorm, GELU and pooling stay fp32.
    Int8,
}

/// Which vector store holds the vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// Qdrant Edge, embedded, under `data_dir` (the offline default).
    Edge,
    /// A Qdrant server over gRPC at `store.url`.
    Qdrant,
}

/// Which LLM answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LlmProvider {
    /// The OpenAI-compatible server at `llm.base_url` when set, else the local model.
    Auto,
    /// The local GGUF model, in process.
    Local,
    /// The OpenAI-compatible server at `llm.base_url`.
    Openai,
}

/// How the LLM response cache is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CacheMode {
    /// Never read or write it.
    Off,
    /// Answer from it; a miss on a non-deterministic provider is an error (replays).
    Read,
    /// Answer from it and store new answers.
    Readwrite,
}

/// How a query scores chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    /// Cosine similarity of the query's embedding.
    Dense,
    /// BM25 over Qdrant's English tokenizer (stemming, stop words).
    Bm25,
    /// Dense and BM25 lists fused by weighted reciprocal rank fusion (`search.hybrid`).
    Hybrid,
}

impl SearchMode {
    /// The name used on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dense => "dense",
            Self::Bm25 => "bm25",
            Self::Hybrid => "hybrid",
        }
    }
}

impl std::str::FromStr for SearchMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "dense" => Ok(Self::Dense),
            "bm25" => Ok(Self::Bm25),
            "hybrid" => Ok(Self::Hybrid),
            _ => Err(format!("unknown search mode {s:?} (dense, bm25 or hybrid)")),
        }
    }
}

/// Price of a model in USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub prompt_per_mtok: f64,
    pub completion_per_mtok: f64,
}

impl Price {
    /// Cost of a call with these token counts.
    pub fn cost(&self, prompt_tokens: usize, completion_tokens: usize) -> f64 {
        (prompt_tokens as f64 * self.prompt_per_mtok
            + completion_tokens as f64 * self.completion_per_mtok)
            / 1e6
    }
}

/// How `signaldesk ingest` (and every eval that ingests) batches and bounds its input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Items embedded together and upserted as one write-ahead-logged operation.
    pub batch_items: usize,
    /// Largest accepted body, in bytes; larger records are rejected with their line.
    pub max_body_bytes: usize,
    /// Longest input line accepted, in bytes; longer lines are rejected without being held.
    pub max_line_bytes: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            batch_items: 256,
            max_body_bytes: 4 << 20,
            max_line_bytes: 16 << 20,
        }
    }
}

/// How queries run: the one place search behaviour is set, read by `signaldesk search`, the
/// evals and the API alike (so a measured figure is what users get).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchConfig {
    /// Mode when a request names none.
    pub mode: SearchMode,
    /// Score every chunk (brute force) instead of using the HNSW index: exact, slower at scale.
    pub exact: bool,
    /// HNSW candidates examined per dense query (Qdrant's `hnsw_ef`): higher trades speed for
    /// recall; 0 (the default) leaves it to the store (the index's `ef_construct`). Hybrid's dense
    /// list always examines at least four times `hybrid.candidates`.
    pub hnsw_ef: usize,
    /// On a quantized collection (`store.quantization`), how many times `k` candidates the
    /// quantized search collects before they are rescored with the full vectors: above 1 it
    /// recovers neighbours the coarse int8 scores ranked just below the cut. 0 leaves it to the
    /// store (1: only the `k` found are rescored). No effect without quantization. The default,
    /// 2, took recall@10 at 1M int8 points from 0.88 to 0.98 (README, "Scaling out").
    pub oversampling: f64,
    pub hybrid: HybridConfig,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            mode: SearchMode::Hybrid,
            exact: false,
            hnsw_ef: 0,
            oversampling: 2.0,
            hybrid: HybridConfig::default(),
        }
    }
}

/// Weighted reciprocal rank fusion of the dense and BM25 lists. Defaults were chosen on SciFact's
/// train queries with the default ingest settings (see eval/README.md).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HybridConfig {
    /// RRF's k: a chunk at rank r in a list adds weight / (k + r). Larger flattens the top ranks.
    pub rrf_k: usize,
    /// Weight of the dense list; the BM25 list has weight 1.
    pub dense_weight: f32,
    /// Chunks taken from each list before fusion. Fixed, so that a top k is always a prefix of
    /// the same fused ranking whatever k is asked for.
    pub candidates: usize,
}

impl Default for HybridConfig {
    fn default() -> Self {
        Self {
            rrf_k: 10,
            dense_weight: 1.25,
            candidates: 100,
        }
    }
}

/// Which LLM answers, and how calls to it behave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmConfig {
    /// `auto` (openai when base_url is set, else local), `local` or `openai`.
    pub provider: LlmProvider,
    /// OpenAI-compatible server root for the `openai` provider (empty: none configured).
    pub base_url: String,
    /// Model name sent to the server.
    pub model: String,
    /// Environment variable holding the API key (the key never goes in a file).
    pub api_key_env: String,
    /// The local GGUF model, relative to models_dir.
    pub local_model: String,
    /// The local model's prompt arithmetic, as `embed.precision`: `fp32` (dequantized weights;
    /// the default, which the eval gate's figures were taken with), `int8` (the embedder's
    /// int8 GEMM: 1.2x the prompt speed on an AVX2 CPU, answers drift slightly), or `auto`
    /// (int8 where the CPU has int8 dot products). `embed.cpu_features_off` masks it too.
    pub local_precision: EmbedPrecision,
    pub connect_timeout_s: f64,
    /// Per attempt: request sent to answer read.
    pub timeout_s: f64,
    /// Attempts in all, the first included.
    pub max_attempts: usize,
    /// No retry delay is slept past this many seconds since the call began.
    pub max_retry_time_s: f64,
    pub concurrency: usize,
    /// 0: no limit.
    pub requests_per_minute: usize,
    /// 0: no limit.
    pub tokens_per_minute: usize,
    /// Response cache: off, read or readwrite.
    pub cache: CacheMode,
    /// The response cache's file; empty: `cache_dir/llm-responses.redb`. Point it at a
    /// committed cache (eval/cache/) with `cache = "read"` to replay a provider's run exactly.
    pub cache_file: String,
    /// `llm serve`: requests allowed to wait behind the one generating; more are answered 429
    /// with Retry-After at once (never an unbounded queue).
    pub serve_queue: usize,
    /// `llm serve`: a request still unanswered after this many seconds gets 504.
    pub serve_timeout_s: f64,
    /// USD per million tokens, by model name.
    pub prices: std::collections::BTreeMap<String, Price>,
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            provider: LlmProvider::Auto,
            base_url: String::new(),
            model: "gpt-4o-mini".into(),
            api_key_env: "OPENAI_API_KEY".into(),
            local_model: "SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf".into(),
            local_precision: EmbedPrecision::Fp32,
            connect_timeout_s: 10.0,
            timeout_s: 120.0,
            max_attempts: 5,
            max_retry_time_s: 300.0,
            concurrency: 8,
            requests_per_minute: 0,
            tokens_per_minute: 0,
            cache: CacheMode::Readwrite,
            cache_file: String::new(),
            serve_queue: 4,
            serve_timeout_s: 300.0,
            prices: [(
                "gpt-4o-mini".to_string(),
                Price {
                    prompt_per_mtok: 0.15,
                    completion_per_mtok: 0.6,
                },
            )]
            .into_iter()
            .collect(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            models_dir: PathBuf::from("models"),
            prompts_dir: PathBuf::from("prompts"),
            data_dir: PathBuf::from("data"),
            cache_dir: PathBuf::from(".cache"),
            embed: EmbedConfig::default(),
            chunk: ChunkConfig::default(),
            ingest: IngestConfig::default(),
            store: StoreConfig::default(),
            search: SearchConfig::default(),
            llm: LlmConfig::default(),
            enrich: EnrichConfig::default(),
            rank: RankConfig::default(),
            answer: AnswerConfig::default(),
            api: ApiConfig::default(),
            stream: StreamConfig::default(),
        }
    }
}

/// The embedding model and how it is run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbedConfig {
    /// A model name under `models_dir`, or a path to any sentence-transformers BERT-family model dir.
    pub model: String,
    /// Texts per forward pass. Texts are sorted by length first, so padding stays small.
    pub batch_size: usize,
    /// `cpu`, or `cuda` / `cuda:N` when built with the `cuda` feature.
    pub device: String,
    /// Cache embeddings on disk keyed by (model fingerprint, text hash).
    pub cache: bool,
    /// `auto`: signaldesk's packed CPU forward pass on the CPU, candle-transformers' BERT on a
    /// GPU; `candle`: candle-transformers' BERT everywhere (the reference implementation).
    pub backend: EmbedBackend,
    /// Arithmetic of the packed CPU forward pass's linear layers: `fp32` (the default), `auto`
    /// (int8 where the CPU has int8 dot-product instructions, fp32 elsewhere) or `int8`. int8
    /// vectors stay within cosine 0.999 of fp32 (README, "Embedding precision"), so one
    /// collection may hold both. fp32 stays the default until the eval gate's committed LLM
    /// response caches are re-recorded: their prompts quote kNN neighbours, and int8 changes
    /// the neighbours of most of them.
    pub precision: EmbedPrecision,
    /// CPU features to hide from the `auto` precision decision, comma-separated (`avx2`,
    /// `avx512vnni`, ...): `"avx2,avx512vnni"` makes `auto` run fp32 on any CPU.
    pub cpu_features_off: String,
}

impl Default for EmbedConfig {
    fn default() -> Self {
        Self {
            model: "all-MiniLM-L6-v2".into(),
            batch_size: 32,
            device: "cpu".into(),
            cache: true,
            backend: EmbedBackend::Auto,
            precision: EmbedPrecision::Fp32,
            cpu_features_off: String::new(),
        }
    }
}

/// How long texts are split before embedding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChunkConfig {
    /// Split items longer than the model's limit into chunks (each embedded and searchable), or
    /// embed each item truncated at the limit. `--chunking on|off` overrides it per command.
    pub enabled: bool,
    /// Most model tokens in one chunk, special tokens included; 0 means the model's `max_seq_length`.
    pub max_tokens: usize,
    /// Tokens repeated from the end of one chunk at the start of the next, so that a sentence cut by
    /// a boundary is still seen whole by one chunk.
    pub overlap_tokens: usize,
}

impl Default for ChunkConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_tokens: 0,
            overlap_tokens: 32,
        }
    }
}

/// Which vector store holds the vectors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `edge` (embedded Qdrant Edge under `data_dir`, the offline default) or `qdrant` (a server).
    pub backend: StoreBackend,
    /// gRPC address of the Qdrant server, for `backend = "qdrant"` (`http://` or `https://`;
    /// Qdrant serves gRPC on 6334, REST on 6333).
    pub url: String,
    /// Collection that holds the content chunks.
    pub collection: String,
    /// Deadline of one call to the Qdrant server, its client's retry included.
    pub timeout_s: u64,
    /// Shards of a new collection on a Qdrant cluster (1 for a single server).
    pub shards: u32,
    /// Copies of each shard on different peers (1 for a single server; 2 survives one lost
    /// peer).
    pub replication_factor: u32,
    /// Copies that must apply a write before it is acknowledged (at most `replication_factor`).
    pub write_consistency_factor: u32,
    /// Vector quantization of new collections: `int8` keeps a 4x smaller scalar-quantized copy of
    /// the dense vectors in RAM for the HNSW search and the full vectors on disk
    /// (memory-mapped), read only to rescore the candidates.
    pub quantization: Quantization,
}

/// How new collections quantize their dense vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Quantization {
    /// Full f32 vectors only.
    #[default]
    None,
    /// Scalar int8 quantization (Qdrant's `scalar`, quantile 0.99, always in RAM; full vectors
    /// on disk).
    Int8,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Edge,
            url: "http://127.0.0.1:6334".into(),
            collection: "content".into(),
            timeout_s: 60,
            shards: 1,
            replication_factor: 1,
            write_consistency_factor: 1,
            quantization: Quantization::None,
        }
    }
}

impl Config {
    /// Load defaults, then the config file, then environment overrides.
    ///
    /// `path` is the file given on the command line; without one, `SIGNALDESK_CONFIG` is used, and
    /// without that, `signaldesk.toml` in the working directory if it exists.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_with_env(path, &env)
    }

    /// [`Config::load`] with an explicit environment, so tests need not touch the process's own.
    pub fn load_with_env(
        path: Option<&Path>,
        env: &[(String, String)],
    ) -> Result<Self, ConfigError> {
        let from_env = env
            .iter()
            .find(|(k, _)| k == "SIGNALDESK_CONFIG")
            .map(|(_, v)| PathBuf::from(v));
        let (file, required) = match (path, from_env) {
            (Some(p), _) => (p.to_path_buf(), true),
            (None, Some(p)) => (p, true),
            (None, None) => (PathBuf::from("signaldesk.toml"), false),
        };
        let mut value = toml::Value::try_from(Config::default())
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if required || file.exists() {
            let text = std::fs::read_to_string(&file).map_err(|source| ConfigError::Read {
                path: file.clone(),
                source,
            })?;
            let overlay: toml::Value = toml::from_str(&text).map_err(|e| ConfigError::Parse {
                path: file.clone(),
                message: e.to_string(),
            })?;
            // The file alone, parsed from its text: errors then carry the line and the key
            // (every section has defaults, so a partial file is a whole config).
            toml::from_str::<Config>(&text).map_err(|e| ConfigError::Parse {
                path: file.clone(),
                message: e.to_string(),
            })?;
            merge(&mut value, overlay);
        }
        for (var, raw) in env {
            let Some(key) = var.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if RESERVED_ENV.contains(&key)
                || RESERVED_ENV_PREFIXES.iter().any(|p| key.starts_with(p))
            {
                continue;
            }
            apply_env(&mut value, var, key, raw)?;
            // Typed here, so a bad value (an unknown enum variant) names its variable and key.
            Config::deserialize(value.clone()).map_err(|e| ConfigError::Env {
                var: var.clone(),
                message: format!(
                    "{}: {e}",
                    key.split("__")
                        .map(str::to_ascii_lowercase)
                        .collect::<Vec<_>>()
                        .join(".")
                ),
            })?;
        }
        let config = Config::deserialize(value).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// This configuration with `overrides` applied: dotted keys (`"llm.cache" = "read"`), each
    /// typed as the value it replaces, exactly as a `SIGNALDESK_*` variable would set it. An eval
    /// suite that needs a knob sets it here, so the knob is the configuration users set too.
    pub fn with_overrides(
        &self,
        overrides: &std::collections::BTreeMap<String, toml::Value>,
    ) -> Result<Config, ConfigError> {
        if overrides.is_empty() {
            return Ok(self.clone());
        }
        let mut value =
            toml::Value::try_from(self).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        for (key, v) in overrides {
            let raw = match v {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let var = format!("config override {key}");
            apply_env(&mut value, &var, &key.replace('.', "__"), &raw)?;
        }
        let config = Config::deserialize(value).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.stream.validate()?;
        if self.embed.batch_size == 0 {
            return Err(ConfigError::Invalid(
                "embed.batch_size must be at least 1".into(),
            ));
        }
        if self.ingest.batch_items == 0 {
            return Err(ConfigError::Invalid(
                "ingest.batch_items must be at least 1".into(),
            ));
        }
        if self.search.hybrid.candidates == 0 {
            return Err(ConfigError::Invalid(
                "search.hybrid.candidates must be at least 1".into(),
            ));
        }
        let store = &self.store;
        if !(store.url.starts_with("http://") || store.url.starts_with("https://")) {
            return Err(ConfigError::Invalid(format!(
                "store.url must start with http:// or https:// (e.g. http://127.0.0.1:6334, Qdrant's gRPC port), got {:?}",
                store.url
            )));
        }
        if store.timeout_s == 0 {
            return Err(ConfigError::Invalid(
                "store.timeout_s must be at least 1".into(),
            ));
        }
        if store.shards == 0 || store.replication_factor == 0 || store.write_consistency_factor == 0
        {
            return Err(ConfigError::Invalid(
                "store.shards, store.replication_factor and store.write_consistency_factor must be at least 1".into(),
            ));
        }
        if store.write_consistency_factor > store.replication_factor {
            return Err(ConfigError::Invalid(format!(
                "store.write_consistency_factor ({}) cannot exceed store.replication_factor ({}): a write cannot wait for more copies than exist",
                store.write_consistency_factor, store.replication_factor
            )));
        }
        if !(self.search.hybrid.dense_weight.is_finite() && self.search.hybrid.dense_weight >= 0.0)
        {
            return Err(ConfigError::Invalid(format!(
                "search.hybrid.dense_weight must be a number >= 0, got {}",
                self.search.hybrid.dense_weight
            )));
        }
        let oversampling = self.search.oversampling;
        if !(oversampling == 0.0 || (oversampling.is_finite() && oversampling >= 1.0)) {
            return Err(ConfigError::Invalid(format!(
                "search.oversampling must be 0 (the store's default) or a number >= 1, got {oversampling}"
            )));
        }
        Ok(())
    }

    /// The model directory that `embed.model` names: a path if it is one, else a name under
    /// `models_dir`.
    pub fn embed_model_dir(&self) -> PathBuf {
        let as_path = Path::new(&self.embed.model);
        if as_path.is_absolute()
            || self.embed.model.contains(std::path::MAIN_SEPARATOR)
            || as_path.exists()
        {
            as_path.to_path_buf()
        } else {
            self.models_dir.join(&self.embed.model)
        }
    }

    /// The effective configuration as TOML, for `signaldesk config show`.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}"))
    }
}

/// Merge `overlay` into `base`, table by table.
fn merge(base: &mut toml::Value, overlay: toml::Value) {
    match (base, overlay) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// Set the key that `SIGNALDESK_A__B` names, typed like the default value it replaces.
fn apply_env(root: &mut toml::Value, var: &str, key: &str, raw: &str) -> Result<(), ConfigError> {
    let err = |message: String| ConfigError::Env {
        var: var.to_string(),
        message,
    };
    let path: Vec<String> = key.split("__").map(|s| s.to_ascii_lowercase()).collect();
    let mut node = root;
    for (i, part) in path.iter().enumerate() {
        let table = node
            .as_table_mut()
            .ok_or_else(|| err(format!("{} is not a section", path[..i].join("."))))?;
        if !table.contains_key(part) {
            let known: Vec<&str> = table.keys().map(String::as_str).collect();
            return Err(err(format!(
                "unknown key {:?} (known here: {})",
                path[..=i].join("."),
                known.join(", ")
            )));
        }
        node = table.get_mut(part).expect("checked above");
    }
    let typed = match node {
        toml::Value::String(_) => toml::Value::String(raw.to_string()),
        toml::Value::Integer(_) => toml::Value::Integer(
            raw.trim()
                .parse()
                .map_err(|_| err(format!("expected an integer, got {raw:?}")))?,
        ),
        toml::Value::Float(_) => toml::Value::Float(
            raw.trim()
                .parse()
                .map_err(|_| err(format!("expected a number, got {raw:?}")))?,
        ),
        toml::Value::Boolean(_) => match raw.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => toml::Value::Boolean(true),
            "0" | "false" | "no" | "off" => toml::Value::Boolean(false),
            _ => return Err(err(format!("expected true or false, got {raw:?}"))),
        },
        toml::Value::Table(_) => {
            return Err(err(format!("{} is a section, not a value", path.join("."))))
        }
        _ => toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .map_err(|e| err(e.to_string()))?
            .remove("v")
            .ok_or_else(|| err("empty value".into()))?,
    };
    *node = typed;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_set_dotted_keys_typed_and_name_unknown_ones() {
        let base = Config::default();
        let o = std::collections::BTreeMap::from([
            ("llm.cache".to_string(), toml::Value::String("read".into())),
            ("enrich.knn.k".to_string(), toml::Value::Integer(1)),
        ]);
        let c = base.with_overrides(&o).unwrap();
        assert_eq!(c.llm.cache, CacheMode::Read);
        assert_eq!(c.enrich.knn.k, 1);
        let bad = std::collections::BTreeMap::from([(
            "llm.cahce".to_string(),
            toml::Value::String("read".into()),
        )]);
        let e = base.with_overrides(&bad).unwrap_err().to_string();
        assert!(e.contains("unknown key \"llm.cahce\""), "{e}");
    }

    #[test]
    fn oversampling_is_the_stores_default_or_at_least_one() {
        let with = |v: f64| {
            let o = std::collections::BTreeMap::from([(
                "search.oversampling".to_string(),
                toml::Value::Float(v),
            )]);
            Config::default().with_overrides(&o)
        };
        assert_eq!(with(2.5).unwrap().search.oversampling, 2.5);
        assert_eq!(with(0.0).unwrap().search.oversampling, 0.0);
        let e = with(0.5).unwrap_err().to_string();
        assert!(e.contains("search.oversampling must be 0"), "{e}");
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_run_offline_on_the_embedded_store() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.toml");
        // An absent default file is fine; an explicitly named one is not.
        let c = Config::load_with_env(None, &env(&[("HOME", "/root")])).unwrap();
        assert_eq!(c.store.backend, StoreBackend::Edge);
        assert_eq!(c.embed.device, "cpu");
        assert_eq!(
            c.embed_model_dir(),
            PathBuf::from("models/all-MiniLM-L6-v2")
        );
        let e = Config::load_with_env(Some(&missing), &[]).unwrap_err();
        assert!(e.to_string().contains("none.toml"), "{e}");
    }

    #[test]
    fn file_then_env_overrides_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.toml");
        std::fs::write(
            &file,
            "models_dir = \"/m\"\n[embed]\nbatch_size = 8\ncache = false\n",
        )
        .unwrap();
        let c = Config::load_with_env(
            Some(&file),
            &env(&[
                ("SIGNALDESK_EMBED__BATCH_SIZE", "4"),
                ("SIGNALDESK_CHUNK__OVERLAP_TOKENS", "0"),
                ("SIGNALDESK_LOG", "debug"),
                ("SIGNALDESK_LOG_FORMAT", "json"),
                ("SIGNALDESK_TEST_CRASH_AFTER", "3"),
            ]),
        )
        .unwrap();
        assert_eq!(c.models_dir, PathBuf::from("/m"));
        assert_eq!(c.embed.batch_size, 4);
        assert!(!c.embed.cache);
        assert_eq!(c.chunk.overlap_tokens, 0);
        assert_eq!(c.embed_model_dir(), PathBuf::from("/m/all-MiniLM-L6-v2"));
    }

    #[test]
    fn unknown_keys_and_bad_values_name_their_source() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.toml");
        std::fs::write(&file, "[embed]\nbatch_sise = 8\n").unwrap();
        let e = Config::load_with_env(Some(&file), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("s.toml") && e.contains("batch_sise"), "{e}");

        let e = Config::load_with_env(None, &env(&[("SIGNALDESK_EMBED__BATCH", "4")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("SIGNALDESK_EMBED__BATCH") && e.contains("batch_size"),
            "{e}"
        );

        let e = Config::load_with_env(None, &env(&[("SIGNALDESK_EMBED__BATCH_SIZE", "many")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected an integer"), "{e}");

        let e = Config::load_with_env(None, &env(&[("SIGNALDESK_STORE__BACKEND", "redis")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("store.backend"), "{e}");
        // Enums fail at load and list the values allowed.
        assert!(e.contains("edge") && e.contains("qdrant"), "{e}");
        for (var, allowed) in [
            ("SIGNALDESK_EMBED__BACKEND", "candle"),
            ("SIGNALDESK_LLM__PROVIDER", "openai"),
            ("SIGNALDESK_LLM__CACHE", "readwrite"),
            ("SIGNALDESK_SEARCH__MODE", "hybrid"),
        ] {
            let e = Config::load_with_env(None, &env(&[(var, "typo")]))
                .unwrap_err()
                .to_string();
            assert!(e.contains(var) && e.contains(allowed), "{e}");
        }
        std::fs::write(&file, "[store]\nbackend = \"redis\"\n").unwrap();
        let e = Config::load_with_env(Some(&file), &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("s.toml") && e.contains("line 2") && e.contains("qdrant"),
            "{e}"
        );
    }

    #[test]
    fn store_urls_and_cluster_layouts_are_checked_at_load() {
        let e = Config::load_with_env(None, &env(&[("SIGNALDESK_STORE__URL", "localhost:6334")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("store.url") && e.contains("http://"), "{e}");
        let e = Config::load_with_env(
            None,
            &env(&[
                ("SIGNALDESK_STORE__REPLICATION_FACTOR", "2"),
                ("SIGNALDESK_STORE__WRITE_CONSISTENCY_FACTOR", "3"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("write_consistency_factor"), "{e}");
        let c = Config::load_with_env(
            None,
            &env(&[
                ("SIGNALDESK_STORE__SHARDS", "3"),
                ("SIGNALDESK_STORE__REPLICATION_FACTOR", "2"),
                ("SIGNALDESK_STORE__URL", "https://qdrant.example:6334"),
            ]),
        )
        .unwrap();
        assert_eq!((c.store.shards, c.store.replication_factor), (3, 2));
    }

    #[test]
    fn shown_config_round_trips() {
        let c = Config::default();
        let back: Config = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(back, c);
    }
}

/// Which tagger runs (`--tagger`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TaggerKind {
    /// Nearest labelled neighbours vote (enrich.knn).
    Knn,
    /// The concepts nearest to the item by label and definition; needs a taxonomy
    /// (enrich.zeroshot).
    Zeroshot,
    /// kNN's votes averaged with a linear head trained on the labelled memory, and the LLM's
    /// picks when enrich.ensemble.llm_weight > 0 (enrich.ensemble, enrich.head, enrich.llm).
    Ensemble,
    /// The LLM picks among candidates retrieved for the item (kNN's votes, the taxonomy's
    /// nearest concepts), with labelled neighbours as examples (enrich.llm, llm.*).
    Llm,
}

impl TaggerKind {
    /// Whether this tagger calls an LLM under `config`.
    pub fn calls_llm(self, config: &Config) -> bool {
        match self {
            Self::Llm => true,
            Self::Ensemble => config.enrich.ensemble.llm_weight > 0.0,
            Self::Knn | Self::Zeroshot => false,
        }
    }
}
