//! The differential harness (issue 12): `tests/python/differential.py`
//! runs the same AMQP operations with pika against a fresh Warren and
//! against RabbitMQ 3.10.8 (Debian's `rabbitmq-server`, started here on a
//! port and folder of its own by `benches/scripts/rabbitmq-node.sh`, which
//! installs the package if it is missing) and fails on any difference
//! between the two transcripts: the hand-written scenarios, then
//! generated sequences from a seed printed in the output (a fifth of
//! their operations on a stream, `--streams`).
//!
//! `WARREN_DIFF_SEED` and `WARREN_DIFF_SEQUENCES` (default 60) set the
//! generated part; a longer run by hand is in docs/divergences.md.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use warren_e2e::{python, start_broker, workspace_root};

/// A RabbitMQ node of this test's own, stopped when dropped.
struct RabbitNode {
    port: u16,
    dir: tempfile::TempDir,
}

impl RabbitNode {
    fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port_pair()?;
        let output = Command::new(script())
            .args(["start", &port.to_string()])
            .arg(dir.path())
            .output()
            .context("cannot run rabbitmq-node.sh")?;
        if !output.status.success() {
            bail!(
                "RabbitMQ did not start ({}):\n{}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(Self { port, dir })
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .args(["stop", &self.port.to_string()])
            .arg(self.dir.path())
            .output();
    }
}

fn script() -> PathBuf {
    workspace_root().join("benches/scripts/rabbitmq-node.sh")
}

/// A port whose Erlang distribution port (port + 20000) is free as well.
fn free_port_pair() -> anyhow::Result<u16> {
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if port < 45_000 && TcpListener::bind(("127.0.0.1", port + 20_000)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free pair of ports (p, p + 20000) found")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warren_answers_every_scenario_and_generated_sequence_as_rabbitmq_does() -> anyhow::Result<()> {
    let rabbit = tokio::task::spawn_blocking(RabbitNode::start).await??;
    let broker = start_broker().await?;
    let seed = match std::env::var("WARREN_DIFF_SEED") {
        Ok(seed) => seed,
        Err(_) => (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis()
            % (1 << 31))
            .to_string(),
    };
    let sequences = std::env::var("WARREN_DIFF_SEQUENCES").unwrap_or_else(|_| "60".to_owned());
    println!("differential: seed {seed} (WARREN_DIFF_SEED={seed} repeats this run)");
    let rabbit_port = rabbit.port.to_string();
    let output = python::run_script_for(
        "differential.py",
        broker.amqp_port(),
        &[
            &rabbit_port,
            "--seed",
            &seed,
            "--sequences",
            &sequences,
            "--length",
            "25",
            "--streams",
        ],
        Duration::from_secs(900),
    )
    .await?;
    println!("{output}");
    assert!(output.contains("differential: ok"), "{output}");
    Ok(())
}
