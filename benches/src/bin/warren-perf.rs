//! `warren-perf`: a load tool in the spirit of RabbitMQ's PerfTest.
//!
//! Producers and consumers each own a connection. Every body starts with a
//! stamp (producer, sequence, send time) so the tool reports publish,
//! confirm and consume rates, end-to-end latency percentiles, and lost
//! (confirmed, never consumed) and duplicated messages. One JSON line, then
//! a table.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::Confirmation;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use warren_bench::{percentiles, read_stamp, stamp, Ledger, STAMP_LEN};

#[derive(Parser, Clone, Debug)]
#[command(name = "warren-perf", about = "AMQP load tool: rates, latency, loss")]
struct Args {
    /// AMQP URI(s), comma separated; producers and consumers are spread over them.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f", value_delimiter = ',')]
    uri: Vec<String>,
    #[arg(long, default_value = "perf")]
    queue: String,
    /// x-queue-type argument (classic, quorum).
    #[arg(long)]
    queue_type: Option<String>,
    #[arg(long)]
    durable: bool,
    /// delivery_mode = 2.
    #[arg(long)]
    persistent: bool,
    /// Publisher confirms with at most this many unconfirmed per producer (0 = off).
    #[arg(long, default_value_t = 0)]
    confirm: usize,
    #[arg(long, default_value_t = 1)]
    producers: u32,
    #[arg(long, default_value_t = 1)]
    consumers: u32,
    #[arg(long, default_value_t = 100)]
    prefetch: u16,
    /// Consume with no-ack (auto-ack) instead of manual acks.
    #[arg(long)]
    auto_ack: bool,
    /// Body size in bytes (at least 20: the stamp).
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Messages per producer.
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Stop publishing after this many seconds even if count is not reached.
    #[arg(long)]
    duration: Option<u64>,
    /// Publish rate per producer in msg/s (0 = as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Seconds to wait for consumers to drain after the producers stop.
    #[arg(long, default_value_t = 30)]
    drain_timeout: u64,
    /// A label for the JSON line.
    #[arg(long, default_value = "")]
    label: String,
}

#[derive(Default)]
struct Shared {
    ledger: Ledger,
    latencies_us: Vec<u64>,
    consumed: u64,
    last_consume: Option<Instant>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.size >= STAMP_LEN, "--size must be at least {STAMP_LEN}");
    let epoch = Instant::now();
    let shared = Arc::new(Mutex::new(Shared::default()));

    let setup = connect(&args.uri[0]).await?;
    let ch = setup.create_channel().await?;
    let mut qargs = FieldTable::default();
    if let Some(t) = &args.queue_type {
        qargs.insert(
            "x-queue-type".into(),
            lapin::types::AMQPValue::LongString(t.as_str().into()),
        );
    }
    ch.queue_declare(
        args.queue.as_str().into(),
        QueueDeclareOptions {
            durable: args.durable,
            ..QueueDeclareOptions::default()
        },
        qargs,
    )
    .await
    .context("declaring the queue")?;
    ch.queue_purge(args.queue.as_str().into(), QueuePurgeOptions::default())
        .await?;

    let expected = args.count * u64::from(args.producers);
    let mut consumers = Vec::new();
    for i in 0..args.consumers {
        let uri = args.uri[i as usize % args.uri.len()].clone();
        consumers.push(tokio::spawn(consume(
            uri,
            args.clone(),
            shared.clone(),
            epoch,
            expected,
        )));
    }
    // Let consumers register before the first publish.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let start = Instant::now();
    let mut producers = Vec::new();
    for p in 0..args.producers {
        let uri = args.uri[p as usize % args.uri.len()].clone();
        producers.push(tokio::spawn(produce(uri, p, args.clone(), shared.clone(), epoch)));
    }
    let mut published = 0u64;
    let mut confirmed = 0u64;
    let mut nacked = 0u64;
    for p in producers {
        let r = p.await??;
        published += r.0;
        confirmed += r.1;
        nacked += r.2;
    }
    let publish_secs = start.elapsed().as_secs_f64();

    let target = if args.confirm > 0 { confirmed } else { published };
    let drain_deadline = Instant::now() + Duration::from_secs(args.drain_timeout);
    loop {
        let consumed = shared.lock().map(|s| s.consumed).unwrap_or(0);
        if consumed >= target || Instant::now() > drain_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for c in consumers {
        c.abort();
    }
    let backlog_at_publish_end;
    let report = {
        let mut s = shared.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        let consume_secs = s.last_consume.map(|t| (t - start).as_secs_f64()).unwrap_or(f64::NAN);
        let accounting = s.ledger.account();
        backlog_at_publish_end = published.saturating_sub(s.consumed);
        let lat = percentiles(&mut s.latencies_us);
        serde_json::json!({
            "label": args.label,
            "producers": args.producers, "consumers": args.consumers, "size": args.size,
            "persistent": args.persistent, "durable": args.durable, "confirm_window": args.confirm,
            "prefetch": args.prefetch, "auto_ack": args.auto_ack,
            "published": published, "confirmed": confirmed, "nacked": nacked, "consumed": s.consumed,
            "publish_rate": published as f64 / publish_secs,
            "confirm_rate": if args.confirm > 0 { confirmed as f64 / publish_secs } else { 0.0 },
            "consume_rate": s.consumed as f64 / consume_secs,
            "latency_us": lat,
            "lost": if args.confirm > 0 { accounting.lost } else { published.saturating_sub(accounting.consumed_unique) },
            "duplicates": accounting.duplicates,
        })
    };
    println!("{report}");
    eprintln!(
        "published {published} in {publish_secs:.2}s ({:.0} msg/s), confirmed {confirmed}, consumed {} ({:.0} msg/s); \
         latency p50 {} µs p95 {} µs p99 {} µs max {} µs; lost {} duplicates {}",
        report["publish_rate"].as_f64().unwrap_or(0.0),
        report["consumed"],
        report["consume_rate"].as_f64().unwrap_or(0.0),
        report["latency_us"]["p50"],
        report["latency_us"]["p95"],
        report["latency_us"]["p99"],
        report["latency_us"]["max"],
        report["lost"],
        report["duplicates"],
    );
    let _ = backlog_at_publish_end;
    Ok(())
}

async fn connect(uri: &str) -> anyhow::Result<Connection> {
    Connection::connect(uri, ConnectionProperties::default())
        .await
        .with_context(|| format!("connecting to {uri}"))
}

/// Returns (published, confirmed, nacked).
async fn produce(
    uri: String,
    producer: u32,
    args: Args,
    shared: Arc<Mutex<Shared>>,
    epoch: Instant,
) -> anyhow::Result<(u64, u64, u64)> {
    let conn = connect(&uri).await?;
    let ch = conn.create_channel().await?;
    if args.confirm > 0 {
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
    }
    let mut body = vec![0u8; args.size];
    let props = if args.persistent {
        BasicProperties::default().with_delivery_mode(2)
    } else {
        BasicProperties::default()
    };
    let mut in_flight = VecDeque::new();
    let (mut confirmed, mut nacked) = (0u64, 0u64);
    let start = Instant::now();
    let stop_at = args.duration.map(|d| start + Duration::from_secs(d));
    let mut seq = 0u64;
    while seq < args.count {
        if stop_at.is_some_and(|t| Instant::now() >= t) {
            break;
        }
        if args.rate > 0 {
            let due = start + Duration::from_secs_f64(seq as f64 / args.rate as f64);
            let now = Instant::now();
            if due > now {
                tokio::time::sleep(due - now).await;
            }
        }
        stamp(&mut body, producer, seq, epoch.elapsed().as_micros() as u64);
        let confirm = ch
            .basic_publish(
                "".into(),
                args.queue.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                props.clone(),
            )
            .await?;
        if args.confirm > 0 {
            in_flight.push_back((seq, confirm));
            while in_flight.len() >= args.confirm {
                if let Some((s, c)) = in_flight.pop_front() {
                    settle(s, c.await?, producer, &shared, &mut confirmed, &mut nacked);
                }
            }
        }
        seq += 1;
    }
    while let Some((s, c)) = in_flight.pop_front() {
        settle(s, c.await?, producer, &shared, &mut confirmed, &mut nacked);
    }
    let _ = conn.close(200, "done".into()).await;
    Ok((seq, confirmed, nacked))
}

fn settle(seq: u64, c: Confirmation, producer: u32, shared: &Mutex<Shared>, confirmed: &mut u64, nacked: &mut u64) {
    match c {
        Confirmation::Ack(_) => {
            *confirmed += 1;
            if let Ok(mut s) = shared.lock() {
                s.ledger.confirmed(producer, seq);
            }
        }
        _ => *nacked += 1,
    }
}

async fn consume(
    uri: String,
    args: Args,
    shared: Arc<Mutex<Shared>>,
    epoch: Instant,
    _expected: u64,
) -> anyhow::Result<()> {
    let conn = connect(&uri).await?;
    let ch = conn.create_channel().await?;
    ch.basic_qos(args.prefetch, BasicQosOptions::default()).await?;
    let mut consumer = ch
        .basic_consume(
            args.queue.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: args.auto_ack,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery?;
        let now_us = epoch.elapsed().as_micros() as u64;
        if let Some((producer, seq, sent)) = read_stamp(&delivery.data) {
            if let Ok(mut s) = shared.lock() {
                s.ledger.consumed(producer, seq);
                s.latencies_us.push(now_us.saturating_sub(sent));
                s.consumed += 1;
                s.last_consume = Some(Instant::now());
            }
        }
        if !args.auto_ack {
            delivery.ack(BasicAckOptions::default()).await?;
        }
    }
    Ok(())
}
