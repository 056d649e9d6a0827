//! The resource alarms: the memory high-watermark (RabbitMQ's memory
//! alarm, ADR 0009) and the free disk limit (RabbitMQ's disk alarm,
//! `disk_free_limit`, issue 9). Either one blocks publishers; [`Alarms`]
//! holds both and the combined signal connections watch.
//!
//! Warren keeps queued messages in memory, so a backlog that consumers do
//! not drain grows the process until the kernel kills it. While this node's
//! estimate of the memory its messages hold (ready, delivered and not yet
//! acked, and bodies still being received) is above
//! `queued_bytes_high_watermark`, the alarm is on: every connection that has
//! published stops reading from its socket (TCP pushes back on the
//! publisher) and, if the client asked for the `connection.blocked`
//! capability, is told `connection.blocked`; when the estimate drops to
//! [`CLEAR_PERCENT`] % of the watermark they are told `connection.unblocked`
//! and read again (the gap keeps a load at the watermark from flipping the
//! alarm every check).
//! Connections that only consume are never blocked, so consumers drain the
//! backlog that ends the alarm.
//!
//! The estimate is computed from the replicated broker state, not from the
//! process's RSS: memory the allocator keeps after a drain would hold an
//! RSS-based alarm on forever.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};
use warren_cluster::Node;

/// The alarms of this node and the signal publishing connections watch:
/// `true` while any alarm is on.
#[derive(Debug)]
pub struct Alarms {
    blocked: watch::Sender<bool>,
    memory: AtomicBool,
    disk: AtomicBool,
}

impl Default for Alarms {
    fn default() -> Self {
        Self {
            blocked: watch::Sender::new(false),
            memory: AtomicBool::new(false),
            disk: AtomicBool::new(false),
        }
    }
}

impl Alarms {
    /// A receiver of the combined signal (`true`: block publishers).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.blocked.subscribe()
    }

    pub fn memory_on(&self) -> bool {
        self.memory.load(Ordering::Relaxed)
    }

    pub fn disk_on(&self) -> bool {
        self.disk.load(Ordering::Relaxed)
    }

    /// The reason `connection.blocked` carries for the alarms on now
    /// (RabbitMQ's words).
    pub fn reason(&self) -> &'static str {
        if self.disk_on() {
            DISK_BLOCKED_REASON
        } else {
            BLOCKED_REASON
        }
    }

    fn set(&self, alarm: &AtomicBool, on: bool) {
        alarm.store(on, Ordering::SeqCst);
        // Read both alarms under the watch's lock: the memory check and the
        // disk watch run in different tasks, and whichever sets last must
        // publish what both say now.
        self.blocked.send_if_modified(|blocked| {
            let any = self.memory.load(Ordering::SeqCst) || self.disk.load(Ordering::SeqCst);
            let changed = *blocked != any;
            *blocked = any;
            changed
        });
    }
}

/// The reason `connection.blocked` carries while the disk alarm is on.
pub const DISK_BLOCKED_REASON: &str = "low on disk";

/// How often the free space of the data directory is measured: a
/// publisher writes tens of MB/s, so a check every second (RabbitMQ's
/// floor) would let it past the limit by that much. `statvfs` costs
/// microseconds.
pub const DISK_CHECK_EVERY: Duration = Duration::from_millis(100);

/// Whether the disk alarm is on with `free` bytes available and a limit of
/// `limit` (0: no limit). As RabbitMQ: on below the limit, off at or above
/// it.
pub fn disk_alarm_on(free: u64, limit: u64) -> bool {
    limit != 0 && free < limit
}

/// Bytes available to an unprivileged writer on the file system of `dir`
/// (`statvfs`: `f_bavail * f_frsize`, what `df` shows as available).
///
/// # Errors
/// `statvfs` failed (the directory is gone, …).
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let stat = rustix::fs::statvfs(dir)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Measures the free space of `dir` every [`DISK_CHECK_EVERY`] and sets
/// the disk alarm of `alarms` accordingly, logging each change. Runs until
/// aborted. `statvfs` runs on a blocking thread.
pub(crate) async fn watch_disk(dir: std::path::PathBuf, limit: u64, alarms: std::sync::Arc<Alarms>) {
    let mut every = tokio::time::interval(DISK_CHECK_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let path = dir.clone();
        let free = match tokio::task::spawn_blocking(move || free_bytes(&path)).await {
            Ok(Ok(free)) => free,
            Ok(Err(e)) => {
                warn!(dir = %dir.display(), error = %e, "cannot measure free disk space");
                continue;
            }
            Err(_) => continue,
        };
        let on = disk_alarm_on(free, limit);
        if on != alarms.disk_on() {
            if on {
                warn!(
                    free,
                    limit,
                    dir = %dir.display(),
                    "disk alarm set: free disk space is below disk_free_limit; blocking publishers"
                );
            } else {
                info!(free, limit, "disk alarm cleared: publishers may go on");
            }
            alarms.set(&alarms.disk, on);
        }
    }
}

/// Bytes counted per ready message on top of its body: properties, routing
/// key, queue entry and message id (an estimate; see ADR 0009).
pub const PER_MESSAGE_OVERHEAD: u64 = 512;

/// How often the backlog is measured.
pub const CHECK_EVERY: Duration = Duration::from_millis(100);

/// The reason `connection.blocked` carries (RabbitMQ's words).
pub const BLOCKED_REASON: &str = "low on memory";

/// Estimated bytes held by `messages` ready messages with `body_bytes` of
/// bodies in all.
pub fn backlog_estimate(messages: u64, body_bytes: u64) -> u64 {
    body_bytes.saturating_add(messages.saturating_mul(PER_MESSAGE_OVERHEAD))
}

/// The alarm clears once the estimate is back to this share of the
/// watermark.
pub const CLEAR_PERCENT: u64 = 90;

/// Whether the alarm is on after a check that found `estimate` bytes, given
/// whether it was `on` before: set above `watermark`, cleared at
/// [`CLEAR_PERCENT`] % of it (0: no watermark, never on).
pub fn alarm_on(on: bool, estimate: u64, watermark: u64) -> bool {
    if watermark == 0 {
        return false;
    }
    if on {
        estimate > watermark / 100 * CLEAR_PERCENT
    } else {
        estimate > watermark
    }
}

/// Measures what this node holds in memory — messages ready or delivered
/// and not acked, and `receiving` bytes of bodies still arriving — and
/// sets the memory alarm of `alarms` accordingly; logs each change as
/// RabbitMQ does.
pub(crate) fn check(node: &Node, watermark: u64, receiving: u64, alarms: &Alarms) {
    let (messages, body_bytes) = node.held_backlog();
    let estimate = backlog_estimate(messages, body_bytes).saturating_add(receiving);
    let was = alarms.memory_on();
    let on = alarm_on(was, estimate, watermark);
    if on == was {
        return;
    }
    if on {
        warn!(
            estimate,
            watermark,
            messages,
            "memory alarm set: held messages take more than the high-watermark; blocking publishers"
        );
    } else {
        info!(
            estimate,
            watermark, messages, "memory alarm cleared: publishers may go on"
        );
    }
    alarms.set(&alarms.memory, on);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_disk_alarm_is_on_below_the_limit() {
        assert!(!disk_alarm_on(0, 0), "0 means no limit");
        assert!(disk_alarm_on(0, 50_000_000));
        assert!(disk_alarm_on(49_999_999, 50_000_000));
        assert!(!disk_alarm_on(50_000_000, 50_000_000), "at the limit: off, as RabbitMQ");
        assert!(!disk_alarm_on(u64::MAX, 50_000_000));
    }

    #[test]
    fn either_alarm_blocks_and_the_reason_names_the_disk_first() {
        let alarms = Alarms::default();
        let blocked = alarms.subscribe();
        assert!(!*blocked.borrow());
        alarms.set(&alarms.memory, true);
        assert!(*blocked.borrow());
        assert_eq!(alarms.reason(), BLOCKED_REASON);
        alarms.set(&alarms.disk, true);
        assert_eq!(alarms.reason(), DISK_BLOCKED_REASON);
        alarms.set(&alarms.memory, false);
        assert!(*blocked.borrow(), "the disk alarm still blocks");
        alarms.set(&alarms.disk, false);
        assert!(!*blocked.borrow());
    }

    #[test]
    fn free_bytes_of_a_real_directory_is_not_zero() {
        let free = free_bytes(Path::new(".")).expect("statvfs");
        assert!(free > 0);
        assert!(free_bytes(Path::new("/no/such/dir")).is_err());
    }

    #[test]
    fn the_estimate_counts_bodies_and_a_fixed_overhead_per_message() {
        assert_eq!(backlog_estimate(0, 0), 0);
        assert_eq!(backlog_estimate(2, 1000), 1000 + 2 * PER_MESSAGE_OVERHEAD);
        assert_eq!(backlog_estimate(u64::MAX, u64::MAX), u64::MAX);
    }

    #[test]
    fn the_alarm_sets_above_the_watermark_and_clears_at_ninety_percent() {
        assert!(!alarm_on(false, 1 << 40, 0), "0 means no watermark");
        assert!(!alarm_on(true, 1 << 40, 0));
        assert!(!alarm_on(false, 1000, 1000), "at the watermark: not set");
        assert!(alarm_on(false, 1001, 1000));
        assert!(alarm_on(true, 950, 1000), "between 90 % and the watermark: stays set");
        assert!(!alarm_on(false, 950, 1000), "... and stays clear");
        assert!(alarm_on(true, 901, 1000));
        assert!(!alarm_on(true, 900, 1000), "at 90 %: cleared");
    }
}
