//! End-to-end test harness for Warren.
//!
//! Owns what every test under `tests/tests/e2e/` needs to drive the real `warren`
//! binary from the outside, the way a user would:
//!
//! - [`WarrenProcess`]: builds (once per test process) and spawns the binary
//!   on a data directory with ephemeral ports, waits for its
//!   `warren: amqp listening on <addr>` line, and can `kill -9` and restart it.
//! - lapin helpers ([`connect`], [`reply_code`], [`next_delivery`], [`within`]).
//! - [`raw`]: a tiny hand-rolled AMQP frame builder and client for the
//!   bad-input tests, where a real client library would refuse to send garbage.
//! - [`ops`]: clusters of `warren` processes operated with `warren ctl`;
//!   [`load`]: publishers and consumers that keep going across node failures.
//! - [`python`]: a virtualenv with pika, created once and shared by all test
//!   processes (guarded by `flock`), and a runner for `tests/python/*.py`.
//!
//! Nothing here asserts on wall-clock durations: timeouts only turn a hang into
//! a failure with the broker's log attached.

pub mod http;
pub mod load;
pub mod ops;
pub mod python;
pub mod raw;
pub mod tls;

use std::{
    io::{BufRead, BufReader, Read},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{mpsc, Arc, Mutex, OnceLock},
    thread,
    time::Duration,
};

use anyhow::{anyhow, bail, Context};
use futures_lite::StreamExt;
use lapin::{message::Delivery, Connection, ConnectionProperties, Consumer};

/// The exact line prefix the server prints on stdout once it accepts AMQP.
pub const LISTENING_PREFIX: &str = "warren: amqp listening on ";

/// The line prefix the server prints on stdout once its cluster (gRPC)
/// listener is bound; it comes before the AMQP line.
pub const CLUSTER_LISTENING_PREFIX: &str = "warren: cluster listening on ";

/// The line prefix the server prints on stdout once its Prometheus
/// listener is bound.
pub const PROMETHEUS_LISTENING_PREFIX: &str = "warren: prometheus listening on ";

/// The line prefix the server prints on stdout once its management API
/// listener is bound.
pub const HTTP_LISTENING_PREFIX: &str = "warren: http listening on ";
/// The line a broker with an AMQPS listener prints once it is bound.
pub const AMQPS_LISTENING_PREFIX: &str = "warren: amqps listening on ";

/// How long a broker may take to print its listening line.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Default bound for a single AMQP round trip in tests: generous, so that a
/// slow CI machine passes and a broken broker fails instead of hanging.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// How many trailing log lines to print when a broker is dropped.
const LOG_TAIL_LINES: usize = 300;

/// The cargo target directory the test binaries were built into.
///
/// `CARGO_TARGET_DIR` wins when set; otherwise it is derived from the running
/// test binary, which lives in `<target>/<profile>/deps/`.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        return if dir.is_absolute() {
            dir
        } else {
            workspace_root().join(dir)
        };
    }
    let exe = std::env::current_exe().ok();
    let from_exe = exe.as_deref().and_then(|exe| {
        let deps = exe.parent()?;
        let profile = deps.parent()?;
        let target = profile.parent()?;
        (deps.file_name()? == "deps").then(|| target.to_path_buf())
    });
    from_exe.unwrap_or_else(|| workspace_root().join("target"))
}

/// The workspace root (the parent of this package's directory).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

/// Path of the `warren` binary the tests run.
pub fn warren_binary() -> PathBuf {
    target_dir()
        .join("debug")
        .join(format!("warren{}", std::env::consts::EXE_SUFFIX))
}

/// Builds the `warren` binary once per test process, unless it exists and
/// `WARREN_E2E_BUILD=0` says not to.
///
/// Building from inside the tests is what lets a bare `cargo nextest run
/// --workspace` work on a fresh clone: nextest only builds test targets.
///
/// # Errors
/// The build failed (its output is in the error) or the binary is still missing.
pub fn ensure_warren_built() -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let binary = warren_binary();
            let skip = std::env::var("WARREN_E2E_BUILD").map(|v| v == "0").unwrap_or(false);
            if skip && binary.exists() {
                return Ok(binary);
            }
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let output = Command::new(cargo)
                .current_dir(workspace_root())
                .args(["build", "-p", "warren-server", "--bin", "warren", "--target-dir"])
                .arg(target_dir())
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("cannot run cargo to build warren: {e}"))?;
            if !output.status.success() {
                return Err(format!(
                    "`cargo build -p warren-server --bin warren` failed ({}):\n{}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr)
                ));
            }
            if !binary.exists() {
                return Err(format!("cargo build succeeded but {} is missing", binary.display()));
            }
            Ok(binary)
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

/// `--config DIR/warren.toml` after writing `config_toml` there; nothing
/// without a config.
///
/// # Errors
/// The file cannot be written.
pub fn config_args(dir: &Path, config_toml: Option<&str>) -> anyhow::Result<Vec<std::ffi::OsString>> {
    let Some(toml) = config_toml else {
        return Ok(Vec::new());
    };
    let path = dir.join("warren.toml");
    std::fs::write(&path, toml).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(vec!["--config".into(), path.into_os_string()])
}

/// Everything the broker printed, shared with the reader threads.
type LogBuffer = Arc<Mutex<Vec<String>>>;

/// A running `warren` process on a data directory, killed on drop.
pub struct WarrenProcess {
    child: Option<Child>,
    amqp_addr: SocketAddr,
    cluster_addr: Option<SocketAddr>,
    data_dir: PathBuf,
    /// Keeps a temporary data directory alive as long as the process handle.
    _temp_dir: Option<Arc<tempfile::TempDir>>,
    logs: LogBuffer,
    generation: u32,
    extra_args: Vec<std::ffi::OsString>,
}

impl WarrenProcess {
    /// Starts a broker on a fresh temporary data directory.
    ///
    /// # Errors
    /// See [`WarrenProcess::start`].
    pub fn start_fresh() -> anyhow::Result<Self> {
        Self::start_fresh_with_config(None)
    }

    /// Starts a broker on a fresh temporary data directory, with `--config`
    /// pointing at a file holding `config_toml` when given.
    ///
    /// # Errors
    /// See [`WarrenProcess::start`].
    pub fn start_fresh_with_config(config_toml: Option<&str>) -> anyhow::Result<Self> {
        let root = tempfile::Builder::new()
            .prefix("warren-e2e-")
            .tempdir()
            .context("cannot create a temporary dir")?;
        let data_dir = root.path().join("data");
        let mut extra_args = Vec::new();
        extra_args.extend(config_args(root.path(), config_toml)?);
        let mut process = Self::start_with_args(&data_dir, extra_args)?;
        process._temp_dir = Some(Arc::new(root));
        Ok(process)
    }

    /// Spawns `warren server` on `data_dir` with ephemeral ports and waits (up
    /// to [`START_TIMEOUT`]) for its `warren: amqp listening on` line.
    ///
    /// # Errors
    /// The binary could not be built or spawned, exited early, or did not
    /// print the listening line in time; the error carries its output.
    pub fn start(data_dir: impl AsRef<Path>) -> anyhow::Result<Self> {
        Self::start_with_args(data_dir, Vec::new())
    }

    /// [`WarrenProcess::start`] with extra command-line arguments (kept for restarts).
    ///
    /// # Errors
    /// See [`WarrenProcess::start`].
    pub fn start_with_args(data_dir: impl AsRef<Path>, extra_args: Vec<std::ffi::OsString>) -> anyhow::Result<Self> {
        let logs: LogBuffer = Arc::new(Mutex::new(Vec::new()));
        let (child, amqp_addr, cluster_addr) = spawn_warren(data_dir.as_ref(), &extra_args, &logs, 0)?;
        Ok(Self {
            child: Some(child),
            amqp_addr,
            cluster_addr,
            data_dir: data_dir.as_ref().to_path_buf(),
            _temp_dir: None,
            logs,
            generation: 0,
            extra_args,
        })
    }

    /// Starts cluster node `node_id` on a fresh temporary data directory,
    /// with ephemeral loopback ports. `join`: the cluster address of a member
    /// to join through; `None` bootstraps a new cluster.
    ///
    /// # Errors
    /// See [`WarrenProcess::start`].
    pub fn start_cluster_node(node_id: u64, join: Option<SocketAddr>) -> anyhow::Result<Self> {
        Self::start_cluster_node_with_config(node_id, join, None)
    }

    /// [`WarrenProcess::start_cluster_node`] with `--config` pointing at a
    /// file holding `config_toml` when given.
    ///
    /// # Errors
    /// See [`WarrenProcess::start`].
    pub fn start_cluster_node_with_config(
        node_id: u64,
        join: Option<SocketAddr>,
        config_toml: Option<&str>,
    ) -> anyhow::Result<Self> {
        Self::start_cluster_node_in_temp_dir(node_id, |root| {
            let mut args = config_args(root, config_toml)?;
            if let Some(join) = join {
                args.push("--join".into());
                args.push(join.to_string().into());
            }
            Ok(args)
        })
    }

    /// Starts cluster node `node_id` on a fresh temporary data directory
    /// with `args` (e.g. `--cluster-listen`, `--join`), kept for restarts.
    ///
    /// # Errors
    /// See [`WarrenProcess::start`].
    pub fn start_cluster_node_with_args(node_id: u64, args: &[&str]) -> anyhow::Result<Self> {
        Self::start_cluster_node_in_temp_dir(node_id, |_| Ok(args.iter().map(std::ffi::OsString::from).collect()))
    }

    /// Starts cluster node `node_id` with `--node-id` and the arguments
    /// `args` makes from its fresh temporary directory (the data directory
    /// is `data` inside it; the directory lives as long as the process).
    fn start_cluster_node_in_temp_dir(
        node_id: u64,
        args: impl FnOnce(&Path) -> anyhow::Result<Vec<std::ffi::OsString>>,
    ) -> anyhow::Result<Self> {
        let root = tempfile::Builder::new()
            .prefix(&format!("warren-e2e-node{node_id}-"))
            .tempdir()
            .context("cannot create a temporary dir")?;
        let data_dir = root.path().join("data");
        let mut extra_args: Vec<std::ffi::OsString> = vec!["--node-id".into(), node_id.to_string().into()];
        extra_args.extend(args(root.path())?);
        let mut process = Self::start_with_args(&data_dir, extra_args)?;
        process._temp_dir = Some(Arc::new(root));
        Ok(process)
    }

    /// Deletes the data directory of a stopped node: a wiped or replaced
    /// volume.
    ///
    /// # Errors
    /// The node still runs, or the directory could not be removed.
    pub fn wipe_data_dir(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.is_running(), "wipe_data_dir: the node still runs");
        std::fs::remove_dir_all(&self.data_dir).with_context(|| format!("removing {}", self.data_dir.display()))
    }

    /// The cluster (gRPC) address the broker listens on, from its
    /// `warren: cluster listening on` line.
    pub fn cluster_addr(&self) -> Option<SocketAddr> {
        self.cluster_addr
    }

    /// The address the broker accepts AMQP connections on.
    pub fn amqp_addr(&self) -> SocketAddr {
        self.amqp_addr
    }

    /// The broker's AMQP port.
    pub fn amqp_port(&self) -> u16 {
        self.amqp_addr.port()
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f`.
    pub fn amqp_uri(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_addr.port())
    }

    /// [`WarrenProcess::amqp_uri`] with a query string (`frame_max=4096&…`).
    pub fn amqp_uri_with(&self, query: &str) -> String {
        format!("{}?{query}", self.amqp_uri())
    }

    /// The data directory this broker runs on.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Sends SIGKILL (`Child::kill` is SIGKILL on unix) and reaps the
    /// process: the crash a test means to cause.
    ///
    /// # Panics
    /// If the broker had already ended by itself: a test that meant to
    /// kill a running node would otherwise pass over a node that crashed.
    pub fn kill9(&mut self) {
        if let Some(status) = self.kill_if_running() {
            panic!(
                "kill9: the broker had already exited by itself ({status}); its log:\n{}",
                self.log_tail(LOG_TAIL_LINES)
            );
        }
    }

    /// SIGKILL if the process still runs; how it had ended if it had
    /// already (restarts and drops take either).
    fn kill_if_running(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        let _ = child.kill();
        let _ = child.wait();
        self.log_line(format!(
            "--- e2e: generation {} killed with SIGKILL ---",
            self.generation
        ));
        None
    }

    /// Sends SIGSTOP: the process keeps its sockets but answers nothing, as
    /// a node cut off by a network partition (or a long GC pause) would.
    ///
    /// # Errors
    /// The process is not running or `kill` failed.
    pub fn pause(&mut self) -> anyhow::Result<()> {
        self.signal("-STOP")?;
        self.log_line(format!("--- e2e: generation {} paused (SIGSTOP) ---", self.generation));
        Ok(())
    }

    /// Sends SIGTERM (what Kubernetes and `docker stop` send) and waits,
    /// at most `limit`, for the process to exit; its exit status.
    ///
    /// # Errors
    /// The process is not running, `kill` failed, or it did not exit in time.
    pub fn terminate(&mut self, limit: Duration) -> anyhow::Result<std::process::ExitStatus> {
        self.signal("-TERM")?;
        self.log_line(format!("--- e2e: generation {} sent SIGTERM ---", self.generation));
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.exit_status() {
                self.child = None;
                return Ok(status);
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "the broker did not exit within {limit:?} of SIGTERM"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGCONT to a [`WarrenProcess::pause`]d process.
    ///
    /// # Errors
    /// The process is not running or `kill` failed.
    pub fn resume(&mut self) -> anyhow::Result<()> {
        self.signal("-CONT")?;
        self.log_line(format!("--- e2e: generation {} resumed (SIGCONT) ---", self.generation));
        Ok(())
    }

    fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let child = self
            .child
            .as_ref()
            .ok_or_else(|| anyhow!("the process is not running"))?;
        let status = std::process::Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .context("running kill")?;
        anyhow::ensure!(status.success(), "kill {signal} {} failed: {status}", child.id());
        Ok(())
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// How the process ended, if it has (`None` while it runs).
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|child| child.try_wait().ok().flatten())
    }

    /// Kills the process if it still runs, then starts a new one on the same
    /// data directory (and a new ephemeral port).
    ///
    /// # Errors
    /// See [`WarrenProcess::start`].
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill_if_running();
        self.generation += 1;
        self.log_line(format!("--- e2e: starting generation {} ---", self.generation));
        let (child, addr, cluster_addr) = spawn_warren(&self.data_dir, &self.extra_args, &self.logs, self.generation)?;
        self.child = Some(child);
        self.amqp_addr = addr;
        self.cluster_addr = cluster_addr;
        Ok(())
    }

    /// Restarts a cluster node on its data directory and on the cluster
    /// address it had (the other members know it by that address); the
    /// AMQP port is new. Returns once the node printed its AMQP line, i.e.
    /// once it caught up with the leader.
    ///
    /// # Errors
    /// The node never printed a cluster address, or see [`WarrenProcess::start`].
    pub fn restart_on_same_cluster_address(&mut self) -> anyhow::Result<()> {
        let cluster_addr = self
            .cluster_addr
            .context("the node printed no cluster address to restart on")?;
        if !self.extra_args.iter().any(|arg| arg == "--cluster-listen") {
            self.extra_args.push("--cluster-listen".into());
            self.extra_args.push(cluster_addr.to_string().into());
        }
        self.restart()
    }

    /// The address of the Prometheus endpoint, from the broker's
    /// `warren: prometheus listening on` line (the latest generation's).
    pub fn prometheus_addr(&self) -> Option<SocketAddr> {
        let logs = self.logs.lock().ok()?;
        logs.iter().rev().find_map(|line| {
            let (_, addr) = line.split_once(PROMETHEUS_LISTENING_PREFIX)?;
            addr.trim().parse().ok()
        })
    }

    /// The pid of the running process (`None` once it was reaped).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The address of the management API, from the broker's `warren: http
    /// listening on` line (the latest generation's).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        let logs = self.logs.lock().ok()?;
        logs.iter().rev().find_map(|line| {
            let (_, addr) = line.split_once(HTTP_LISTENING_PREFIX)?;
            addr.trim().parse().ok()
        })
    }

    /// The address of the AMQPS listener, from the broker's `warren: amqps
    /// listening on` line (the latest generation's).
    pub fn amqps_addr(&self) -> Option<SocketAddr> {
        let logs = self.logs.lock().ok()?;
        logs.iter().rev().find_map(|line| {
            let (_, addr) = line.split_once(AMQPS_LISTENING_PREFIX)?;
            addr.trim().parse().ok()
        })
    }

    /// The last `lines` lines the broker printed (stdout and stderr).
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.logs, lines)
    }

    fn log_line(&self, line: String) {
        if let Ok(mut logs) = self.logs.lock() {
            logs.push(line);
        }
    }
}

impl Drop for WarrenProcess {
    fn drop(&mut self) {
        self.kill_if_running();
        // The test runner captures this and shows it only for failing tests.
        eprintln!(
            "----- warren log (last {LOG_TAIL_LINES} lines, data dir {}) -----\n{}\n----- end of warren log -----",
            self.data_dir.display(),
            self.log_tail(LOG_TAIL_LINES)
        );
    }
}

fn tail(logs: &LogBuffer, lines: usize) -> String {
    let logs = match logs.lock() {
        Ok(logs) => logs.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    let start = logs.len().saturating_sub(lines);
    logs[start..].join("\n")
}

fn spawn_warren(
    data_dir: &Path,
    extra_args: &[std::ffi::OsString],
    logs: &LogBuffer,
    generation: u32,
) -> anyhow::Result<(Child, SocketAddr, Option<SocketAddr>)> {
    let binary = ensure_warren_built()?;
    let mut command = Command::new(&binary);
    command.arg("server");
    if !extra_args.iter().any(|arg| arg == "--node-id") {
        command.args(["--node-id", "1"]);
    }
    if !extra_args.iter().any(|arg| arg == "--cluster-listen") {
        command.args(["--cluster-listen", "127.0.0.1:0"]);
    }
    if !extra_args.iter().any(|arg| arg == "--prometheus-listen") {
        command.args(["--prometheus-listen", "127.0.0.1:0"]);
    }
    let mut child = command
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--amqp-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .args(extra_args)
        .env(
            "RUST_LOG",
            std::env::var("WARREN_E2E_RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot spawn {}", binary.display()))?;

    let (addr_tx, addr_rx) = mpsc::channel::<String>();
    let cluster_line: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let stderr = child.stderr.take().context("no stderr pipe")?;
    drain_lines(
        stdout,
        Arc::clone(logs),
        format!("[{generation} out] "),
        Some((addr_tx, Arc::clone(&cluster_line))),
    );
    drain_lines(stderr, Arc::clone(logs), format!("[{generation} err] "), None);

    let failure = |child: &mut Child, why: String| {
        let _ = child.kill();
        let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
        // Give the reader threads a moment to collect the last lines.
        thread::sleep(Duration::from_millis(200));
        anyhow!(
            "warren did not start: {why} (exit: {status})\n--- output ---\n{}",
            tail(logs, 400)
        )
    };
    match addr_rx.recv_timeout(START_TIMEOUT) {
        Ok(addr) => match addr.trim().parse::<SocketAddr>() {
            Ok(addr) => {
                // The cluster line comes first, from the same reader thread.
                let cluster_addr = cluster_line
                    .lock()
                    .ok()
                    .and_then(|line| line.as_deref().and_then(|a| a.trim().parse::<SocketAddr>().ok()));
                Ok((child, addr, cluster_addr))
            }
            Err(e) => Err(failure(
                &mut child,
                format!("unparsable listening address {addr:?}: {e}"),
            )),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => Err(failure(
            &mut child,
            format!("no `{LISTENING_PREFIX}<addr>` line within {START_TIMEOUT:?}"),
        )),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            Err(failure(&mut child, "stdout closed before the listening line".into()))
        }
    }
}

/// Where the stdout reader reports the listening lines: the AMQP address
/// to the channel, the cluster address into the slot.
type ListeningLines = (mpsc::Sender<String>, Arc<Mutex<Option<String>>>);

/// Copies `pipe` line by line into `logs`; the first AMQP listening line
/// goes to the sender, the cluster listening line into the slot.
fn drain_lines(pipe: impl Read + Send + 'static, logs: LogBuffer, prefix: String, listening: Option<ListeningLines>) {
    thread::spawn(move || {
        let (mut addr_tx, cluster_slot) = match listening {
            Some((tx, slot)) => (Some(tx), Some(slot)),
            None => (None, None),
        };
        let mut reader = BufReader::new(pipe);
        let mut raw = Vec::new();
        loop {
            raw.clear();
            match reader.read_until(b'\n', &mut raw) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let line = String::from_utf8_lossy(&raw).trim_end().to_string();
            if let (Some(addr), Some(slot)) = (line.strip_prefix(CLUSTER_LISTENING_PREFIX), cluster_slot.as_ref()) {
                if let Ok(mut slot) = slot.lock() {
                    slot.get_or_insert_with(|| addr.to_string());
                }
            }
            if let Some(addr) = line.strip_prefix(LISTENING_PREFIX) {
                if let Some(tx) = addr_tx.take() {
                    let _ = tx.send(addr.to_string());
                }
            }
            if let Ok(mut logs) = logs.lock() {
                logs.push(format!("{prefix}{line}"));
            }
        }
    });
}

/// Runs `fut` with [`STEP_TIMEOUT`], turning a hang into an error naming `what`.
///
/// # Errors
/// `fut` failed, or did not finish in time.
pub async fn within<T, E>(what: &str, fut: impl std::future::Future<Output = Result<T, E>>) -> anyhow::Result<T>
where
    E: Into<anyhow::Error>,
{
    within_for(STEP_TIMEOUT, what, fut).await
}

/// [`within`] with an explicit bound.
///
/// # Errors
/// `fut` failed, or did not finish in time.
pub async fn within_for<T, E>(
    limit: Duration,
    what: &str,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> anyhow::Result<T>
where
    E: Into<anyhow::Error>,
{
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(e.into().context(format!("{what} failed"))),
        Err(_) => bail!("{what}: no answer within {limit:?}"),
    }
}

/// Opens a lapin connection to `uri` (bounded by [`STEP_TIMEOUT`]).
///
/// # Errors
/// The connection was refused or the handshake failed or timed out.
pub async fn connect(uri: &str) -> anyhow::Result<Connection> {
    within(
        &format!("connect to {uri}"),
        Connection::connect(uri, ConnectionProperties::default()),
    )
    .await
}

/// The AMQP reply code carried by a lapin error, if it is a protocol error.
pub fn reply_code(error: &lapin::Error) -> Option<u16> {
    match error.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => Some(amqp.get_id()),
        _ => None,
    }
}

/// Like [`reply_code`] but looks through an [`anyhow::Error`] chain.
pub fn reply_code_any(error: &anyhow::Error) -> Option<u16> {
    error
        .chain()
        .find_map(|e| e.downcast_ref::<lapin::Error>().and_then(reply_code))
}

/// Asserts that `result` failed with AMQP reply code `expected`.
///
/// # Errors
/// It succeeded, or failed some other way.
pub fn expect_reply_code<T: std::fmt::Debug>(
    result: Result<T, lapin::Error>,
    expected: u16,
    what: &str,
) -> anyhow::Result<()> {
    match result {
        Ok(value) => bail!("{what}: expected reply code {expected}, got success {value:?}"),
        Err(e) if reply_code(&e) == Some(expected) => Ok(()),
        Err(e) => bail!(
            "{what}: expected reply code {expected}, got {e} (code {:?})",
            reply_code(&e)
        ),
    }
}

/// The next delivery of `consumer`, within [`STEP_TIMEOUT`].
///
/// # Errors
/// The consumer ended (cancelled), failed, or nothing arrived in time.
pub async fn next_delivery(consumer: &mut Consumer) -> anyhow::Result<Delivery> {
    next_delivery_for(consumer, STEP_TIMEOUT).await
}

/// The next delivery of `consumer` within `limit`.
///
/// # Errors
/// The consumer ended (cancelled), failed, or nothing arrived in time.
pub async fn next_delivery_for(consumer: &mut Consumer, limit: Duration) -> anyhow::Result<Delivery> {
    match tokio::time::timeout(limit, consumer.next()).await {
        Ok(Some(Ok(delivery))) => Ok(delivery),
        Ok(Some(Err(e))) => Err(anyhow::Error::new(e).context("consumer failed")),
        Ok(None) => bail!(
            "consumer {} ended (cancelled) while a delivery was expected",
            consumer.tag()
        ),
        Err(_) => bail!("no delivery on consumer {} within {limit:?}", consumer.tag()),
    }
}

/// Asserts that `consumer` gets nothing during `quiet`.
///
/// Used for "prefetch holds the third message back": absence can only be
/// observed over some window; the window is not asserted as a duration.
///
/// # Errors
/// A delivery (or the end of the consumer) arrived.
pub async fn expect_no_delivery(consumer: &mut Consumer, quiet: Duration) -> anyhow::Result<()> {
    match tokio::time::timeout(quiet, consumer.next()).await {
        Err(_) => Ok(()),
        Ok(Some(Ok(d))) => bail!(
            "unexpected delivery (tag {}, body {:?})",
            d.delivery_tag,
            String::from_utf8_lossy(&d.data)
        ),
        Ok(Some(Err(e))) => bail!("consumer failed: {e}"),
        Ok(None) => bail!("consumer ended"),
    }
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `limit`.
///
/// # Errors
/// `check` failed, or never returned `Some` in time.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("{what}: condition not reached within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts a fresh broker without blocking a runtime worker.
///
/// # Errors
/// See [`WarrenProcess::start`].
pub async fn start_broker() -> anyhow::Result<WarrenProcess> {
    tokio::task::spawn_blocking(WarrenProcess::start_fresh)
        .await
        .context("start task panicked")?
}

/// Starts a fresh broker with `--config` set to a file holding `config_toml`.
///
/// # Errors
/// See [`WarrenProcess::start`].
pub async fn start_broker_with_config(config_toml: &str) -> anyhow::Result<WarrenProcess> {
    let toml = config_toml.to_string();
    tokio::task::spawn_blocking(move || WarrenProcess::start_fresh_with_config(Some(&toml)))
        .await
        .context("start task panicked")?
}

/// Restarts `broker` on its data directory without blocking a runtime worker.
///
/// # Errors
/// See [`WarrenProcess::restart`].
pub async fn restart_broker(broker: WarrenProcess) -> anyhow::Result<WarrenProcess> {
    tokio::task::spawn_blocking(move || {
        let mut broker = broker;
        broker.restart().map(|()| broker)
    })
    .await
    .context("restart task panicked")?
}

/// A fresh broker, a connection to it and one open channel.
///
/// # Errors
/// The broker did not start or the connection failed.
pub async fn broker_with_channel() -> anyhow::Result<(WarrenProcess, Connection, lapin::Channel)> {
    let broker = start_broker().await?;
    let conn = connect(&broker.amqp_uri()).await?;
    let channel = within("channel.open", conn.create_channel()).await?;
    Ok((broker, conn, channel))
}

/// Helpers that keep test bodies about AMQP rather than lapin's signatures.
pub mod amqp {
    use anyhow::bail;
    use lapin::{
        message::BasicGetMessage,
        options::{BasicGetOptions, BasicPublishOptions, QueueBindOptions, QueueDeclareOptions},
        types::{AMQPValue, FieldTable, ShortString},
        BasicProperties, Channel, Confirmation, ExchangeKind, Queue,
    };

    use crate::within;

    /// A field table from `(key, value)` pairs.
    pub fn table<const N: usize>(entries: [(&str, AMQPValue); N]) -> FieldTable {
        let mut table = FieldTable::default();
        for (key, value) in entries {
            table.insert(ShortString::from(key), value);
        }
        table
    }

    /// A long-string field value.
    pub fn longstr(s: &str) -> AMQPValue {
        AMQPValue::LongString(s.into())
    }

    /// A signed 64-bit field value (`l`), what RabbitMQ clients send for integers.
    pub fn long(v: i64) -> AMQPValue {
        AMQPValue::LongLongInt(v)
    }

    /// Declares a queue with `options` and `args`.
    ///
    /// # Errors
    /// The broker refused or did not answer.
    pub async fn declare_queue(
        ch: &Channel,
        name: &str,
        options: QueueDeclareOptions,
        args: FieldTable,
    ) -> anyhow::Result<Queue> {
        within(
            &format!("queue.declare {name}"),
            ch.queue_declare(name.into(), options, args),
        )
        .await
    }

    /// Declares a plain (non-durable, non-exclusive) queue.
    ///
    /// # Errors
    /// The broker refused or did not answer.
    pub async fn plain_queue(ch: &Channel, name: &str) -> anyhow::Result<Queue> {
        declare_queue(ch, name, QueueDeclareOptions::default(), FieldTable::default()).await
    }

    /// Declares an exchange of `kind` with default options.
    ///
    /// # Errors
    /// The broker refused or did not answer.
    pub async fn exchange(ch: &Channel, name: &str, kind: ExchangeKind) -> anyhow::Result<()> {
        within(
            &format!("exchange.declare {name}"),
            ch.exchange_declare(name.into(), kind, Default::default(), FieldTable::default()),
        )
        .await
    }

    /// Binds `queue` to `exchange` with `key`.
    ///
    /// # Errors
    /// The broker refused or did not answer.
    pub async fn bind(ch: &Channel, queue: &str, exchange: &str, key: &str) -> anyhow::Result<()> {
        bind_args(ch, queue, exchange, key, FieldTable::default()).await
    }

    /// Binds `queue` to `exchange` with `key` and binding arguments.
    ///
    /// # Errors
    /// The broker refused or did not answer.
    pub async fn bind_args(
        ch: &Channel,
        queue: &str,
        exchange: &str,
        key: &str,
        args: FieldTable,
    ) -> anyhow::Result<()> {
        within(
            &format!("queue.bind {queue} -> {exchange} ({key})"),
            ch.queue_bind(
                queue.into(),
                exchange.into(),
                key.into(),
                QueueBindOptions::default(),
                args,
            ),
        )
        .await
    }

    /// Publishes `body` and waits for the publisher confirm if the channel is
    /// in confirm mode (otherwise returns `NotRequested` at once).
    ///
    /// # Errors
    /// The publish or its confirm failed.
    pub async fn publish(ch: &Channel, exchange: &str, key: &str, body: &[u8]) -> anyhow::Result<Confirmation> {
        publish_with(ch, exchange, key, body, BasicProperties::default(), false).await
    }

    /// Publishes with properties and the mandatory flag, waiting for the confirm.
    ///
    /// # Errors
    /// The publish or its confirm failed.
    pub async fn publish_with(
        ch: &Channel,
        exchange: &str,
        key: &str,
        body: &[u8],
        properties: BasicProperties,
        mandatory: bool,
    ) -> anyhow::Result<Confirmation> {
        let options = BasicPublishOptions {
            mandatory,
            ..Default::default()
        };
        let confirm = within(
            &format!("basic.publish to {exchange:?}/{key:?}"),
            ch.basic_publish(exchange.into(), key.into(), options, body, properties),
        )
        .await?;
        within("publisher confirm", confirm).await
    }

    /// basic.get with no-ack; `None` for get-empty.
    ///
    /// # Errors
    /// The broker refused or did not answer.
    pub async fn get(ch: &Channel, queue: &str) -> anyhow::Result<Option<BasicGetMessage>> {
        within(
            &format!("basic.get {queue}"),
            ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }),
        )
        .await
    }

    /// basic.get with manual ack.
    ///
    /// # Errors
    /// The broker refused or did not answer.
    pub async fn get_unacked(ch: &Channel, queue: &str) -> anyhow::Result<Option<BasicGetMessage>> {
        within(
            &format!("basic.get {queue}"),
            ch.basic_get(queue.into(), BasicGetOptions { no_ack: false }),
        )
        .await
    }

    /// Drains `queue` with no-ack basic.get and returns the bodies as strings.
    ///
    /// # Errors
    /// The broker refused or did not answer.
    pub async fn drain(ch: &Channel, queue: &str) -> anyhow::Result<Vec<String>> {
        let mut bodies = Vec::new();
        while let Some(msg) = get(ch, queue).await? {
            bodies.push(String::from_utf8_lossy(&msg.delivery.data).to_string());
            if bodies.len() > 100_000 {
                bail!("queue {queue} does not drain");
            }
        }
        Ok(bodies)
    }

    /// The queue's message count, from a passive declare.
    ///
    /// # Errors
    /// The queue is missing (404, which also closes `ch`) or no answer.
    pub async fn message_count(ch: &Channel, queue: &str) -> anyhow::Result<u32> {
        let q = declare_queue(
            ch,
            queue,
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
        Ok(q.message_count())
    }

    /// Whether `queue` exists, using a throwaway channel on `conn` (a 404 closes it).
    ///
    /// # Errors
    /// Any failure other than 404.
    pub async fn queue_exists(conn: &lapin::Connection, queue: &str) -> anyhow::Result<bool> {
        let ch = within("channel.open", conn.create_channel()).await?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let result = tokio::time::timeout(
            crate::STEP_TIMEOUT,
            ch.queue_declare(queue.into(), passive, FieldTable::default()),
        )
        .await
        .map_err(|_| anyhow::anyhow!("passive queue.declare {queue}: no answer"))?;
        match result {
            Ok(_) => {
                let _ = ch.close(200, "OK".into()).await;
                Ok(true)
            }
            Err(e) if crate::reply_code(&e) == Some(404) => Ok(false),
            Err(e) => Err(anyhow::Error::new(e).context(format!("passive queue.declare {queue}"))),
        }
    }

    /// Whether `exchange` exists, using a throwaway channel on `conn`.
    ///
    /// # Errors
    /// Any failure other than 404.
    pub async fn exchange_exists(conn: &lapin::Connection, exchange: &str) -> anyhow::Result<bool> {
        let ch = within("channel.open", conn.create_channel()).await?;
        let passive = lapin::options::ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        };
        // The kind is ignored by a passive declare.
        let fut = ch.exchange_declare(exchange.into(), ExchangeKind::Direct, passive, FieldTable::default());
        let result = tokio::time::timeout(crate::STEP_TIMEOUT, fut)
            .await
            .map_err(|_| anyhow::anyhow!("passive exchange.declare {exchange}: no answer"))?;
        match result {
            Ok(()) => {
                let _ = ch.close(200, "OK".into()).await;
                Ok(true)
            }
            Err(e) if crate::reply_code(&e) == Some(404) => Ok(false),
            Err(e) => Err(anyhow::Error::new(e).context(format!("passive exchange.declare {exchange}"))),
        }
    }

    /// Body as a `String`, for assertions.
    pub fn text(data: &[u8]) -> String {
        String::from_utf8_lossy(data).to_string()
    }
}
