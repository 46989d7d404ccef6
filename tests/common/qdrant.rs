//! Real Qdrant servers for tests: the v1.18.3 binary that `../shared/qdrant/` provides (the version
//! docker-compose.yml pins), unpacked once into the build cache after its sha256 is checked, and
//! started on free 127.0.0.1 ports with its storage in a temp dir. Single servers and
//! three-peer clusters; each server is killed when dropped.
//!
//! Where the binary is absent (a user's clone without `../shared`), [`available`] prints one line
//! naming what is missing and the test returns: the server tests are skipped visibly. Under
//! `SIGNALDESK_TEST_REQUIRE_QDRANT=1` (set by `.ci/run`) absence is a failure, so CI never passes by
//! skipping. `SIGNALDESK_TEST_QDRANT_BIN` may name an installed `qdrant` binary instead.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The pinned fixture and the sha256 of its unpacked binary (from `../shared/qdrant/SHA256SUMS`).
const ARCHIVE: &str = "qdrant-v1.18.3-x86_64-linux-gnu.xz";
const BINARY_SHA256: &str = "0033a280820b75c10be2c01b23e71688d2d5fc50495d76a1be61e19dd95d65c2";
/// Makes a missing binary a failure instead of a skip.
pub const REQUIRE_ENV: &str = "SIGNALDESK_TEST_REQUIRE_QDRANT";
/// An installed Qdrant binary to use instead of the fixture.
pub const BIN_ENV: &str = "SIGNALDESK_TEST_QDRANT_BIN";

fn archive_path() -> PathBuf {
    super::root()
        .parent()
        .unwrap_or(Path::new("/"))
        .join("shared/qdrant")
        .join(ARCHIVE)
}

fn sha256_hex(path: &Path) -> String {
    let mut hasher = Sha256::new();
    let mut file = std::fs::File::open(path).unwrap();
    std::io::copy(&mut file, &mut hasher).unwrap();
    format!("{:x}", hasher.finalize())
}

/// The Qdrant binary, unpacked and checked, or `None` (after one visible line) when the fixture is
/// absent and not required. `test` names the caller in that line.
pub fn available(test: &str) -> Option<PathBuf> {
    if let Ok(bin) = std::env::var(BIN_ENV) {
        let bin = PathBuf::from(bin);
        assert!(bin.is_file(), "{BIN_ENV}={} is not a file", bin.display());
        return Some(bin);
    }
    let archive = archive_path();
    if !archive.is_file() {
        let why = format!(
            "no Qdrant test binary at {} (or set {BIN_ENV} to an installed qdrant v1.18)",
            archive.display()
        );
        let required = std::env::var(REQUIRE_ENV).is_ok_and(|v| !v.is_empty() && v != "0");
        assert!(
            !required,
            "{test}: {why}; {REQUIRE_ENV} is set, so this is a failure, not a skip"
        );
        eprintln!("SKIPPED {test}: {why}");
        return None;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("qdrant-v1.18.3");
    let bin = dir.join("qdrant");
    // Only a checked binary is ever renamed to this path, so one found there needs no new check.
    if bin.is_file() {
        return Some(bin);
    }
    // Unpacked under a private name, checked, then renamed: tests in other processes may do the
    // same at the same time, and none of them ever sees a partial binary.
    std::fs::create_dir_all(&dir).unwrap();
    let partial = dir.join(format!("qdrant.partial-{}", std::process::id()));
    let out = std::fs::File::create(&partial).unwrap();
    let status = Command::new("xz")
        .arg("-dc")
        .arg(&archive)
        .stdout(out)
        .status()
        .expect("xz unpacks the Qdrant fixture (apt-get install xz-utils)");
    assert!(status.success(), "xz -dc {} failed", archive.display());
    let got = sha256_hex(&partial);
    assert_eq!(
        got,
        BINARY_SHA256,
        "{} unpacks to a binary with the wrong sha256",
        archive.display()
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&partial, &bin).unwrap();
    Some(bin)
}

/// A port nobody listens on right now (the server binds it a moment later; a lost race shows as
/// a failed start, which [`QdrantServer::start`] retries on other ports).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How a server is started.
#[derive(Clone, Default)]
pub struct ServerOptions {
    pub api_key: Option<String>,
    /// Cluster mode: this peer's p2p port, and the first peer's p2p port to bootstrap from
    /// (`None` for the first peer itself).
    pub cluster: Option<(u16, Option<u16>)>,
}

/// One running Qdrant server (or cluster peer), killed on drop.
pub struct QdrantServer {
    bin: PathBuf,
    child: Option<Child>,
    /// Storage, snapshots, logs and the working directory, kept across restarts.
    dir: tempfile::TempDir,
    pub http_port: u16,
    pub grpc_port: u16,
    options: ServerOptions,
}

impl QdrantServer {
    /// Start a server and wait until it is ready.
    pub fn start(bin: &Path, options: ServerOptions) -> Self {
        let mut last = String::new();
        for _ in 0..3 {
            let mut server = Self {
                bin: bin.to_path_buf(),
                child: None,
                dir: tempfile::tempdir().unwrap(),
                http_port: free_port(),
                grpc_port: free_port(),
                options: options.clone(),
            };
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(e) => last = e,
            }
        }
        panic!("Qdrant did not start: {last}");
    }

    /// The gRPC address signaldesk connects to.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    /// The REST address (for readiness and cluster state).
    pub fn rest_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("qdrant.log"))
            .unwrap();
        let mut cmd = Command::new(&self.bin);
        cmd.current_dir(d)
            .env("QDRANT__STORAGE__STORAGE_PATH", d.join("storage"))
            .env("QDRANT__STORAGE__SNAPSHOTS_PATH", d.join("snapshots"))
            .env("QDRANT__SERVICE__HOST", "127.0.0.1")
            .env("QDRANT__SERVICE__HTTP_PORT", self.http_port.to_string())
            .env("QDRANT__SERVICE__GRPC_PORT", self.grpc_port.to_string())
            .env("QDRANT__TELEMETRY_DISABLED", "true")
            .env("QDRANT__LOG_LEVEL", "WARN")
            .arg("--disable-telemetry")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(key) = &self.options.api_key {
            cmd.env("QDRANT__SERVICE__API_KEY", key);
        }
        if let Some((p2p, bootstrap)) = self.options.cluster {
            cmd.env("QDRANT__CLUSTER__ENABLED", "true")
                .env("QDRANT__CLUSTER__P2P__PORT", p2p.to_string())
                .arg("--uri")
                .arg(format!("http://127.0.0.1:{p2p}"));
            if let Some(first) = bootstrap {
                cmd.arg("--bootstrap")
                    .arg(format!("http://127.0.0.1:{first}"));
            }
        }
        self.child = Some(cmd.spawn().map_err(|e| format!("cannot run qdrant: {e}"))?);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!("qdrant exited ({status}): {}", self.log_tail()));
            }
            // REST can answer before the gRPC port listens (seen after a restart in CI): ready
            // means both.
            let grpc = ("127.0.0.1", self.grpc_port);
            if self.get("/readyz").is_some_and(|(code, _)| code == 200)
                && TcpStream::connect(grpc).is_ok()
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.kill();
        Err(format!("not ready within 60 s: {}", self.log_tail()))
    }

    /// The end of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("qdrant.log")).unwrap_or_default();
        let mut start = log.len().saturating_sub(2000);
        while !log.is_char_boundary(start) {
            start -= 1;
        }
        log[start..].to_string()
    }

    /// `GET path` on the REST port: status code and body, or `None` if nothing answers.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.http_port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let key = self
            .options
            .api_key
            .as_ref()
            .map(|k| format!("api-key: {k}\r\n"))
            .unwrap_or_default();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{key}Connection: close\r\n\r\n"
        )
        .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let code = response.split(' ').nth(1)?.parse().ok()?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Some((code, body))
    }

    /// SIGKILL the server (no shutdown, as a crash or an OOM kill would).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start the killed server again on the same ports and storage.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart a killed server only");
        if let Err(e) = self.spawn_and_wait() {
            panic!("Qdrant did not restart: {e}");
        }
    }
}

impl Drop for QdrantServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A cluster of `n` peers on loopback: the first started alone, the others bootstrapped from it.
/// Returns once every peer is ready and the first one sees all `n` peers.
pub fn cluster(bin: &Path, n: usize) -> Vec<QdrantServer> {
    let first_p2p = free_port();
    let mut peers = vec![QdrantServer::start(
        bin,
        ServerOptions {
            cluster: Some((first_p2p, None)),
            ..Default::default()
        },
    )];
    for _ in 1..n {
        peers.push(QdrantServer::start(
            bin,
            ServerOptions {
                cluster: Some((free_port(), Some(first_p2p))),
                ..Default::default()
            },
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = peers[0]
            .get("/cluster")
            .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
            .and_then(|v| v["result"]["peers"].as_object().map(|p| p.len()))
            .unwrap_or(0);
        if seen == n {
            return peers;
        }
        assert!(
            Instant::now() < deadline,
            "the cluster did not form: the first peer sees {seen} of {n} peers"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every stored chunk of `collection` on a Qdrant server as (content id, chunk index, content
/// hash, text); a chunk stored twice fails.
pub async fn stored_chunks(
    store: &signaldesk::store::QdrantStore,
    collection: &str,
) -> std::collections::BTreeSet<(String, usize, String, String)> {
    use signaldesk::store::{Filter, VectorStore};
    let mut out = std::collections::BTreeSet::new();
    let mut offset = None;
    loop {
        let (page, next) = store
            .scroll(collection, &Filter::default(), offset, 500)
            .await
            .unwrap();
        for c in page {
            let hash = c.payload["content_hash"].as_str().unwrap().to_string();
            let text = c.payload["text"].as_str().unwrap().to_string();
            assert!(
                out.insert((c.content_id, c.chunk_index, hash, text)),
                "duplicate chunk"
            );
        }
        match next {
            Some(n) => offset = Some(n),
            None => return out,
        }
    }
}
