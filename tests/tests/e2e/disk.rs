//! The disk alarm and a full disk, for real (issue 9, item 4): the data
//! directory lives on a small tmpfs mounted for the test, so the file
//! system really fills. Mounting needs root, as CI runs; elsewhere set
//! `WARREN_SKIP_ROOT_TESTS=1` to skip these tests (they say so).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};
use warren_e2e::amqp::{self, declare_queue};
use warren_e2e::{connect, eventually, within, WarrenProcess};

/// A tmpfs mounted on a temporary directory; unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `mib` MiB, or `None` if the tests are to be
    /// skipped (`WARREN_SKIP_ROOT_TESTS=1`).
    fn mount(mib: u64) -> anyhow::Result<Option<Tmpfs>> {
        if std::env::var("WARREN_SKIP_ROOT_TESTS").is_ok_and(|v| v == "1") {
            eprintln!("SKIPPED: WARREN_SKIP_ROOT_TESTS=1 (this test mounts a tmpfs)");
            return Ok(None);
        }
        let dir = tempfile::Builder::new().prefix("warren-disk-").tempdir()?;
        run_mount(&["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"], dir.path())
            .context("mounting a tmpfs needs root; set WARREN_SKIP_ROOT_TESTS=1 to skip this test")?;
        Ok(Some(Tmpfs { dir }))
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn resize(&self, mib: u64) -> anyhow::Result<()> {
        run_mount(&["-o", &format!("remount,size={mib}m")], self.dir.path())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn run_mount(args: &[&str], target: &Path) -> anyhow::Result<()> {
    let output = std::process::Command::new("mount")
        .args(args)
        .arg(target)
        .output()
        .context("running mount")?;
    if !output.status.success() {
        bail!(
            "mount {args:?} {}: {}",
            target.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

fn start_on(tmpfs: &Tmpfs, config_toml: &str) -> anyhow::Result<WarrenProcess> {
    let args = warren_e2e::config_args(tmpfs.dir.path(), Some(config_toml))?;
    WarrenProcess::start_with_args(tmpfs.path(), args)
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

async fn durable_queue(ch: &Channel, name: &str) -> anyhow::Result<()> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    declare_queue(ch, name, durable, FieldTable::default()).await?;
    Ok(())
}

/// Publishes `count` persistent messages of `size` bytes (the first bytes
/// say their number) in windows of `window`, and returns the numbers the
/// broker confirmed, stopping at the first failure (the connection went).
async fn publish_until_failure(ch: &Channel, queue: &str, count: u64, size: usize, window: u64) -> BTreeSet<u64> {
    let mut confirmed = BTreeSet::new();
    let mut next = 0;
    while next < count {
        let mut pending = Vec::new();
        for n in next..(next + window).min(count) {
            let mut body = format!("{n:010}").into_bytes();
            body.resize(size, b'x');
            match ch
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    &body,
                    persistent(),
                )
                .await
            {
                Ok(confirm) => pending.push((n, confirm)),
                Err(_) => return confirmed,
            }
        }
        next = (next + window).min(count);
        for (n, confirm) in pending {
            match tokio::time::timeout(Duration::from_secs(30), confirm).await {
                Ok(Ok(c)) if c.is_ack() => {
                    confirmed.insert(n);
                }
                other => {
                    eprintln!("confirm of {n}: {other:?}");
                    return confirmed;
                }
            }
        }
    }
    confirmed
}

// Issue 9: with the data directory's free space under disk_free_limit,
// publishers are blocked (connection.blocked, "low on disk") before the
// disk fills; when space comes back (the tmpfs grows), they are unblocked
// and every message is confirmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_are_blocked_by_the_disk_alarm_before_the_disk_fills() -> anyhow::Result<()> {
    let Some(tmpfs) = Tmpfs::mount(64)? else {
        return Ok(());
    };
    // 64 MiB of disk, blocked below 40 MB free: after ~27 MB of log.
    let broker = start_on(&tmpfs, "disk_free_limit = 40000000\nqueued_bytes_high_watermark = 0\n")?;
    let publisher = connect(&broker.amqp_uri()).await?;
    let ch = within("channel.open", publisher.create_channel()).await?;
    durable_queue(&ch, "disk").await?;
    within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await?;
    // × 16 KiB = 62.5 MiB of log: without the alarm the disk would fill.
    const MESSAGES: u64 = 4000;
    let publishing = tokio::spawn(async move {
        let confirmed = publish_until_failure(&ch, "disk", MESSAGES, 16 * 1024, 32).await;
        (ch, confirmed)
    });
    eventually(
        "connection.blocked by the disk alarm",
        Duration::from_secs(60),
        || async { Ok(publisher.status().blocked().then_some(())) },
    )
    .await?;
    assert!(
        broker.log_tail(5000).contains("disk alarm set"),
        "the broker logs the disk alarm"
    );
    if publishing.is_finished() {
        let (_, confirmed) = publishing.await?;
        bail!(
            "the publisher stopped while blocked, after {} confirms",
            confirmed.len()
        );
    }
    tmpfs.resize(256)?;
    let (ch, confirmed) = tokio::time::timeout(Duration::from_secs(120), publishing)
        .await
        .context("the publisher was not unblocked")??;
    assert_eq!(
        confirmed.len() as u64,
        MESSAGES,
        "every message confirmed once unblocked"
    );
    assert!(!publisher.status().blocked());
    assert_eq!(amqp::message_count(&ch, "disk").await?, MESSAGES as u32);
    assert!(broker.log_tail(5000).contains("disk alarm cleared"));
    Ok(())
}

// Issue 9: with the alarm off, the disk fills for real (ENOSPC). The node
// stops confirming and exits non-zero with a clear log line, instead of
// lingering; restarted on a larger disk it has every message it confirmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_disk_fills_exits_non_zero_and_keeps_every_confirmed_message() -> anyhow::Result<()> {
    let Some(tmpfs) = Tmpfs::mount(16)? else {
        return Ok(());
    };
    let mut broker = start_on(&tmpfs, "disk_free_limit = 0\nqueued_bytes_high_watermark = 0\n")?;
    let conn = connect(&broker.amqp_uri()).await?;
    let ch = within("channel.open", conn.create_channel()).await?;
    durable_queue(&ch, "full").await?;
    within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await?;
    // 8,000 × 4 KiB = 31 MiB: twice what the disk holds.
    let confirmed = publish_until_failure(&ch, "full", 8000, 4096, 32).await;
    eprintln!("confirmed before the disk filled: {}", confirmed.len());
    assert!(
        !confirmed.is_empty(),
        "some messages were confirmed before the disk filled"
    );
    assert!(confirmed.len() < 8000, "the disk filled before every message was in");
    let status = eventually("the node to exit", Duration::from_secs(60), || {
        let status = broker.exit_status();
        async move { Ok(status) }
    })
    .await?;
    assert!(!status.success(), "exit status {status}: non-zero");
    let log = broker.log_tail(5000);
    assert!(log.contains("fatal: the Raft node stopped"), "a clear log line: {log}");

    tmpfs.resize(128)?;
    broker.restart()?;
    let conn = connect(&broker.amqp_uri()).await?;
    let ch = within("channel.open", conn.create_channel()).await?;
    let bodies = amqp::drain(&ch, "full").await?;
    let kept: BTreeSet<u64> = bodies
        .iter()
        .filter_map(|body| body.get(..10).and_then(|n| n.parse().ok()))
        .collect();
    let lost: Vec<&u64> = confirmed.difference(&kept).collect();
    assert!(
        lost.is_empty(),
        "{} confirmed messages lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    assert_eq!(kept.len(), bodies.len(), "no duplicates");
    Ok(())
}
