//! `amqprs-perf`: `warren-perf`'s load on the amqprs client instead of
//! lapin. On a 2-core machine the client competes with the broker for CPU,
//! and amqprs costs about a third of lapin's CPU per message
//! (docs/benchmarks.md, 2026-11-28), so the broker's share is measured, not
//! the client's. It has the cases `compare.sh` runs: transient with
//! auto-ack (1, 2) and durable with publisher confirms and manual acks
//! (3, 4), several producers and consumers, on classic or quorum queues
//! (`--queue-type`, for the three-node cases 5 and 6); not `warren-perf`'s reconnects,
//! rate limits or probes. Same stamps, same ledger, and the same JSON
//! field names as `warren-perf` for the fields it has.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amqprs::callbacks::{ChannelCallback, DefaultConnectionCallback};
use amqprs::channel::{
    BasicAckArguments, BasicConsumeArguments, BasicPublishArguments, BasicQosArguments, Channel,
    ConfirmSelectArguments, QueueDeclareArguments, QueuePurgeArguments,
};
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::{Ack, BasicProperties, Cancel, CloseChannel, FieldTable, LongStr, Nack, Return, ShortStr};
use clap::Parser;
use serde_json::json;
use tokio::sync::Semaphore;
use warren_bench::{cpu_us_per_msg, percentiles, process_cpu_us, read_stamp, stamp, Ledger, MAX_PRODUCERS, STAMP_LEN};

#[derive(Parser, Clone, Debug)]
#[command(name = "amqprs-perf", about = "warren-perf's load on the amqprs client")]
struct Args {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 5672)]
    port: u16,
    #[arg(long, default_value = "perf-amqprs")]
    queue: String,
    /// Body size in bytes (at least 16: the stamp).
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Messages per producer.
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Stop publishing after this many seconds even if count is not reached.
    #[arg(long)]
    duration: Option<u64>,
    #[arg(long, default_value_t = 1)]
    producers: u32,
    #[arg(long, default_value_t = 1)]
    consumers: u32,
    /// Declare the queue durable.
    #[arg(long)]
    durable: bool,
    /// x-queue-type argument (classic, quorum): phase B of compare.sh
    /// declares RabbitMQ's queues as quorum queues.
    #[arg(long)]
    queue_type: Option<String>,
    /// delivery_mode = 2.
    #[arg(long)]
    persistent: bool,
    /// Publisher confirms with at most this many unconfirmed per producer (0 = off).
    #[arg(long, default_value_t = 0)]
    confirm: usize,
    /// Acknowledge each delivery (default: auto-ack).
    #[arg(long)]
    manual_ack: bool,
    #[arg(long, default_value_t = 100)]
    prefetch: u16,
    #[arg(long, default_value_t = 30)]
    drain_timeout: u64,
    #[arg(long, default_value = "")]
    label: String,
}

async fn open(args: &Args) -> anyhow::Result<Connection> {
    let conn = Connection::open(&OpenConnectionArguments::new(&args.host, args.port, "guest", "guest")).await?;
    conn.register_callback(DefaultConnectionCallback).await?;
    Ok(conn)
}

#[derive(Default)]
struct Shared {
    ledger: Ledger,
    latencies_us: Vec<u64>,
    consumed: u64,
    last_consume: Option<Instant>,
    confirmed: u64,
    nacked: u64,
    errors: Vec<String>,
}

/// One producer's channel callback: settles confirms (single or
/// `multiple`) against the tags still unconfirmed, marks them in the ledger
/// and gives their window permits back.
struct Confirms {
    producer: u32,
    /// Delivery tags published and not yet confirmed (tag = seq + 1).
    unconfirmed: Arc<Mutex<BTreeSet<u64>>>,
    window: Arc<Semaphore>,
    shared: Arc<Mutex<Shared>>,
}

impl Confirms {
    fn settle(&self, tag: u64, multiple: bool, acked: bool) {
        let settled: Vec<u64> = {
            let Ok(mut unconfirmed) = self.unconfirmed.lock() else {
                return;
            };
            if multiple {
                let rest = unconfirmed.split_off(&(tag + 1));
                std::mem::replace(&mut *unconfirmed, rest).into_iter().collect()
            } else if unconfirmed.remove(&tag) {
                vec![tag]
            } else {
                Vec::new()
            }
        };
        if let Ok(mut s) = self.shared.lock() {
            for tag in &settled {
                if acked {
                    s.ledger.confirmed(self.producer, tag - 1);
                    s.confirmed += 1;
                } else {
                    s.nacked += 1;
                }
            }
        }
        self.window.add_permits(settled.len());
    }
}

impl Drop for Confirms {
    /// amqprs drops the callback when the connection dies without a
    /// `channel.close`: a producer waiting for window permits stops then.
    fn drop(&mut self) {
        self.window.close();
    }
}

#[async_trait::async_trait]
impl ChannelCallback for Confirms {
    async fn close(&mut self, _channel: &Channel, close: CloseChannel) -> Result<(), amqprs::error::Error> {
        if let Ok(mut s) = self.shared.lock() {
            s.errors
                .push(format!("producer {}: channel closed: {close}", self.producer));
        }
        // Nothing more will be confirmed: let the producer stop waiting.
        self.window.close();
        Ok(())
    }
    async fn cancel(&mut self, _channel: &Channel, _cancel: Cancel) -> Result<(), amqprs::error::Error> {
        Ok(())
    }
    async fn flow(&mut self, _channel: &Channel, active: bool) -> Result<bool, amqprs::error::Error> {
        Ok(active)
    }
    async fn publish_ack(&mut self, _channel: &Channel, ack: Ack) {
        self.settle(ack.delivery_tag(), ack.mutiple(), true);
    }
    async fn publish_nack(&mut self, _channel: &Channel, nack: Nack) {
        self.settle(nack.delivery_tag(), nack.multiple(), false);
    }
    async fn publish_return(&mut self, _channel: &Channel, _ret: Return, _props: BasicProperties, _content: Vec<u8>) {}
}

/// A consumer's channel callback: reports a close or a server cancel.
struct Watch {
    shared: Arc<Mutex<Shared>>,
}

#[async_trait::async_trait]
impl ChannelCallback for Watch {
    async fn close(&mut self, _channel: &Channel, close: CloseChannel) -> Result<(), amqprs::error::Error> {
        if let Ok(mut s) = self.shared.lock() {
            s.errors.push(format!("consumer channel closed: {close}"));
        }
        Ok(())
    }
    async fn cancel(&mut self, _channel: &Channel, _cancel: Cancel) -> Result<(), amqprs::error::Error> {
        if let Ok(mut s) = self.shared.lock() {
            s.errors.push("consumer cancelled by the server".to_owned());
        }
        Ok(())
    }
    async fn flow(&mut self, _channel: &Channel, active: bool) -> Result<bool, amqprs::error::Error> {
        Ok(active)
    }
    async fn publish_ack(&mut self, _channel: &Channel, _ack: Ack) {}
    async fn publish_nack(&mut self, _channel: &Channel, _nack: Nack) {}
    async fn publish_return(&mut self, _channel: &Channel, _ret: Return, _props: BasicProperties, _content: Vec<u8>) {}
}

async fn consume(args: Args, shared: Arc<Mutex<Shared>>, epoch: Instant) -> anyhow::Result<Connection> {
    let conn = open(&args).await?;
    let ch = conn.open_channel(None).await?;
    ch.register_callback(Watch { shared: shared.clone() }).await?;
    ch.basic_qos(BasicQosArguments::new(0, args.prefetch, false)).await?;
    let (_tag, mut rx) = ch
        .basic_consume_rx(
            BasicConsumeArguments::new(&args.queue, "")
                .manual_ack(args.manual_ack)
                .finish(),
        )
        .await?;
    tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            let now_us = epoch.elapsed().as_micros() as u64;
            if let Some((producer, seq, sent)) = msg.content.as_deref().and_then(read_stamp) {
                if let Ok(mut s) = shared.lock() {
                    s.ledger.consumed(producer, seq);
                    s.latencies_us.push(now_us.saturating_sub(sent));
                    s.consumed += 1;
                    s.last_consume = Some(Instant::now());
                }
            }
            if args.manual_ack {
                if let Some(deliver) = &msg.deliver {
                    if ch
                        .basic_ack(BasicAckArguments::new(deliver.delivery_tag(), false))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    });
    Ok(conn)
}

struct Produced {
    published: u64,
    unconfirmed: u64,
    conn: Connection,
}

async fn produce(
    producer: u32,
    args: Args,
    shared: Arc<Mutex<Shared>>,
    epoch: Instant,
    stop_at: Option<Instant>,
) -> anyhow::Result<Produced> {
    let conn = open(&args).await?;
    let ch = conn.open_channel(None).await?;
    let unconfirmed = Arc::new(Mutex::new(BTreeSet::new()));
    let window = Arc::new(Semaphore::new(args.confirm));
    ch.register_callback(Confirms {
        producer,
        unconfirmed: unconfirmed.clone(),
        window: window.clone(),
        shared: shared.clone(),
    })
    .await?;
    if args.confirm > 0 {
        ch.confirm_select(ConfirmSelectArguments::default()).await?;
    }
    let properties = if args.persistent {
        BasicProperties::default().with_delivery_mode(2).finish()
    } else {
        BasicProperties::default()
    };
    let publish_args = BasicPublishArguments::new("", &args.queue);
    let mut body = vec![0u8; args.size];
    let mut published = 0;
    for seq in 0..args.count {
        if stop_at.is_some_and(|t| Instant::now() >= t) {
            break;
        }
        if args.confirm > 0 {
            match window.acquire().await {
                Ok(permit) => permit.forget(),
                Err(_) => break, // the channel closed
            }
            if let Ok(mut u) = unconfirmed.lock() {
                u.insert(seq + 1);
            }
        }
        stamp(&mut body, producer, seq, epoch.elapsed().as_micros() as u64);
        if let Err(e) = ch
            .basic_publish(properties.clone(), body.clone(), publish_args.clone())
            .await
        {
            // Reported, and the run ends with what it has (as warren-perf).
            if let Ok(mut u) = unconfirmed.lock() {
                u.remove(&(seq + 1));
            }
            if let Ok(mut s) = shared.lock() {
                s.errors.push(format!("producer {producer}: publish failed: {e}"));
            }
            break;
        }
        published += 1;
    }
    if args.confirm > 0 {
        // Wait for the last confirms (bounded: a broker that stops
        // confirming leaves them unconfirmed; a closed channel none).
        let deadline = Instant::now() + Duration::from_secs(args.drain_timeout);
        while unconfirmed.lock().map(|u| !u.is_empty()).unwrap_or(false)
            && !window.is_closed()
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let unconfirmed = unconfirmed.lock().map(|u| u.len() as u64).unwrap_or(0);
    Ok(Produced {
        published,
        unconfirmed,
        conn,
    })
}

async fn ready(ch: &Channel, queue: &str) -> Option<u32> {
    let mut passive = QueueDeclareArguments::new(queue);
    passive.passive(true);
    match ch.queue_declare(passive).await {
        Ok(Some((_, ready, _))) => Some(ready),
        _ => None,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.size >= STAMP_LEN, "--size must be at least {STAMP_LEN}");
    anyhow::ensure!(args.producers <= MAX_PRODUCERS, "at most {MAX_PRODUCERS} producers");
    let cpu_start = process_cpu_us();
    let epoch = Instant::now();
    let shared = Arc::new(Mutex::new(Shared::default()));

    let setup = open(&args).await?;
    let ch = setup.open_channel(None).await?;
    let mut declare = QueueDeclareArguments::new(&args.queue);
    declare.durable(args.durable);
    if let Some(kind) = &args.queue_type {
        let mut table = FieldTable::new();
        table.insert(
            ShortStr::try_from("x-queue-type").map_err(|e| anyhow::anyhow!("{e:?}"))?,
            LongStr::try_from(kind.as_str())
                .map_err(|e| anyhow::anyhow!("{e:?}"))?
                .into(),
        );
        declare.arguments(table);
    }
    ch.queue_declare(declare).await?;
    ch.queue_purge(QueuePurgeArguments::new(&args.queue)).await?;

    let mut consumers = Vec::new();
    for _ in 0..args.consumers {
        consumers.push(consume(args.clone(), shared.clone(), epoch).await?);
    }
    // Let consumers register before the first publish.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let start = Instant::now();
    let stop_at = args.duration.map(|d| start + Duration::from_secs(d));
    let producers: Vec<_> = (0..args.producers)
        .map(|p| tokio::spawn(produce(p, args.clone(), shared.clone(), epoch, stop_at)))
        .collect();
    let (mut published, mut unconfirmed, mut producer_conns) = (0, 0, Vec::new());
    for p in producers {
        let done = p.await??;
        published += done.published;
        unconfirmed += done.unconfirmed;
        producer_conns.push(done.conn);
    }
    let publish_secs = start.elapsed().as_secs_f64();
    let ready_at_publish_end = ready(&ch, &args.queue).await;
    let consumed_at_publish_end = shared.lock().map(|s| s.consumed).unwrap_or(0);

    let deadline = Instant::now() + Duration::from_secs(args.drain_timeout);
    while args.consumers > 0 && Instant::now() < deadline {
        let drained = shared
            .lock()
            .map(|s| {
                if args.confirm > 0 {
                    s.ledger.confirmed_pending() == 0
                } else {
                    s.ledger.consumed_unique() >= published
                }
            })
            .unwrap_or(false);
        if drained {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ready_at_end = ready(&ch, &args.queue).await;
    let cpu_us = match (cpu_start, process_cpu_us()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let report = {
        let mut s = shared.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        let consume_secs = s.last_consume.map(|t| (t - start).as_secs_f64());
        let accounting = s.ledger.account();
        let lat = percentiles(&mut s.latencies_us);
        let lost = if args.confirm > 0 {
            accounting.lost
        } else {
            published.saturating_sub(accounting.consumed_unique)
        };
        json!({
            "label": args.label, "client": "amqprs", "queue": args.queue, "queue_type": args.queue_type,
            "producers": args.producers, "consumers": args.consumers, "size": args.size,
            "persistent": args.persistent, "durable": args.durable, "confirm_window": args.confirm,
            "prefetch": args.prefetch, "auto_ack": !args.manual_ack,
            "published": published, "confirmed": s.confirmed, "nacked": s.nacked,
            "unconfirmed": unconfirmed, "consumed": s.consumed,
            "publish_secs": publish_secs,
            "publish_rate": published as f64 / publish_secs,
            "confirm_rate": if args.confirm > 0 { s.confirmed as f64 / publish_secs } else { 0.0 },
            "consume_rate": consume_secs.map_or(0.0, |secs| s.consumed as f64 / secs),
            "latency_us": lat,
            "lost": lost,
            "duplicates": accounting.duplicates,
            "backlog_at_publish_end": published.saturating_sub(consumed_at_publish_end),
            "ready_at_publish_end": ready_at_publish_end,
            "ready_at_end": ready_at_end,
            "errors": s.errors,
            "cpu_us": cpu_us,
            "cpu_us_per_msg": cpu_us.map(|c| cpu_us_per_msg(c, published, s.consumed)),
        })
    };
    println!("{report}");
    eprintln!(
        "amqprs: published {published} ({:.0} msg/s), confirmed {} ({:.0} msg/s), consumed {} ({:.0} msg/s), lost {}, client CPU {:.1} µs/msg",
        report["publish_rate"].as_f64().unwrap_or(0.0),
        report["confirmed"],
        report["confirm_rate"].as_f64().unwrap_or(0.0),
        report["consumed"],
        report["consume_rate"].as_f64().unwrap_or(0.0),
        report["lost"],
        report["cpu_us_per_msg"].as_f64().unwrap_or(0.0),
    );
    for conn in producer_conns.into_iter().chain(consumers) {
        let _ = conn.close().await;
    }
    let _ = setup.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn confirms(window: usize, tags: &[u64]) -> Confirms {
        let unconfirmed = Arc::new(Mutex::new(tags.iter().copied().collect::<BTreeSet<u64>>()));
        Confirms {
            producer: 3,
            unconfirmed,
            window: Arc::new(Semaphore::new(window)),
            shared: Arc::new(Mutex::new(Shared::default())),
        }
    }

    fn left(c: &Confirms) -> Vec<u64> {
        c.unconfirmed.lock().expect("lock").iter().copied().collect()
    }

    #[test]
    fn acks_settle_their_tags_once_and_give_the_window_back() {
        let c = confirms(0, &[1, 2, 3, 4, 5]);
        c.settle(3, true, true);
        assert_eq!(left(&c), vec![4, 5], "multiple settles 1..=3");
        assert_eq!(c.window.available_permits(), 3);
        c.settle(3, true, true);
        c.settle(2, false, true);
        assert_eq!(c.window.available_permits(), 3, "settled tags are not settled again");
        c.settle(5, false, false);
        assert_eq!(left(&c), vec![4]);
        assert_eq!(c.window.available_permits(), 4, "a nack frees its permit too");
        let s = c.shared.lock().expect("lock");
        assert_eq!((s.confirmed, s.nacked), (3, 1));
        // Tags are seq + 1: seqs 0..=2 confirmed, none of them consumed.
        assert_eq!(s.ledger.confirmed_pending(), 3);
    }

    #[test]
    fn a_dropped_callback_closes_the_window() {
        let c = confirms(1, &[]);
        let window = c.window.clone();
        drop(c);
        assert!(window.is_closed(), "a producer waiting for permits stops");
    }
}
