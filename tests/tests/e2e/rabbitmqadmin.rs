//! The `rabbitmqadmin` v2 binary against a real `warren` process (issue 10,
//! item 6): the tool people already run against RabbitMQ declares, lists,
//! publishes, gets, exports definitions and runs health checks unchanged.
//!
//! The binary is installed once into `<target>/tools` with `cargo install
//! rabbitmqadmin --version RABBITMQADMIN_VERSION --locked --debug` (under a
//! file lock, as the pika virtualenv is made; a debug build, as a client it
//! is fast enough and builds in a fraction of the release build's time);
//! `.ci/run` installs it before the tests so that its build does not
//! compete with them.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

/// The rabbitmqadmin release the tests run.
const RABBITMQADMIN_VERSION: &str = "2.35.0";

/// `<target>/tools/bin/rabbitmqadmin`, installed if missing.
fn rabbitmqadmin() -> anyhow::Result<PathBuf> {
    let root = warren_e2e::target_dir().join("tools");
    let binary = root.join("bin").join("rabbitmqadmin");
    let marker = root.join(format!(".rabbitmqadmin-{RABBITMQADMIN_VERSION}"));
    if marker.exists() && binary.exists() {
        return Ok(binary);
    }
    std::fs::create_dir_all(&root)?;
    let script = format!(
        r#"set -e
if [ ! -f "{marker}" ]; then
  cargo install rabbitmqadmin --version {RABBITMQADMIN_VERSION} --locked --debug --root "{root}"
  touch "{marker}"
fi"#,
        marker = marker.display(),
        root = root.display(),
    );
    let output = Command::new("flock")
        .arg(root.join(".lock"))
        .args(["sh", "-c", &script])
        .stdin(Stdio::null())
        .output()
        .context("running cargo install rabbitmqadmin under flock")?;
    if !output.status.success() {
        bail!(
            "installing rabbitmqadmin {RABBITMQADMIN_VERSION} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(binary)
}

/// Runs rabbitmqadmin against the API at `port`; its stdout, or an error
/// with its output.
fn run(binary: &PathBuf, port: u16, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(binary)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--username", "guest", "--password", "guest"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running rabbitmqadmin {args:?}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "rabbitmqadmin {args:?} exited with {}:\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmqadmin_declares_lists_publishes_gets_and_exports() -> anyhow::Result<()> {
    let binary = tokio::task::spawn_blocking(rabbitmqadmin).await??;
    let broker = warren_e2e::start_broker().await?;
    let port = broker.http_addr().context("no http address")?.port();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let admin = |args: &[&str]| run(&binary, port, args);
        admin(&["declare", "queue", "--name", "from-admin", "--durable", "true"])?;
        let queues = admin(&["list", "queues"])?;
        assert!(
            queues.contains("from-admin") && queues.contains("warren@node-1"),
            "{queues}"
        );

        admin(&["declare", "exchange", "--name", "admin-x", "--type", "topic"])?;
        admin(&[
            "declare",
            "binding",
            "--source",
            "admin-x",
            "--destination-type",
            "queue",
            "--destination",
            "from-admin",
            "--routing-key",
            "a.#",
        ])?;
        assert!(admin(&["list", "bindings"])?.contains("admin-x"));
        let published = admin(&[
            "publish",
            "message",
            "--exchange",
            "admin-x",
            "--routing-key",
            "a.b",
            "--payload",
            "via-admin",
        ])?;
        assert!(published.contains("routed"), "{published}");
        let got = admin(&["get", "messages", "--queue", "from-admin", "--count", "1"])?;
        assert!(got.contains("via-admin"), "{got}");

        admin(&[
            "declare",
            "user",
            "--name",
            "ops",
            "--password",
            "pw",
            "--tags",
            "monitoring",
        ])?;
        let users = admin(&["list", "users"])?;
        assert!(users.contains("ops") && users.contains("monitoring"), "{users}");

        let exported = admin(&["definitions", "export", "--stdout"])?;
        let definitions: serde_json::Value = serde_json::from_str(&exported).context("export is JSON")?;
        assert!(
            definitions["queues"]
                .as_array()
                .is_some_and(|q| q.iter().any(|q| q["name"] == "from-admin")),
            "{definitions}"
        );
        for check in [
            vec!["health_check", "local_alarms"],
            vec!["health_check", "node_is_quorum_critical"],
        ] {
            assert!(admin(&check)?.contains("passed"), "{check:?}");
        }
        let overview = admin(&["show", "overview"])?;
        assert!(overview.contains("Warren"), "{overview}");

        admin(&["purge", "queue", "--name", "from-admin"])?;
        admin(&["delete", "queue", "--name", "from-admin"])?;
        assert!(!admin(&["list", "queues"])?.contains("from-admin"));
        // A missing queue: rabbitmqadmin reports the 404 and fails.
        assert!(admin(&["purge", "queue", "--name", "from-admin"]).is_err());
        Ok(())
    })
    .await??;
    Ok(())
}
