//! `warren-perf`: a load tool in the spirit of RabbitMQ's PerfTest.
//!
//! Producers and consumers each own a connection. Every body starts with a
//! stamp (producer, sequence, send time) so the tool reports publish,
//! confirm and consume rates, end-to-end latency percentiles, and lost
//! (confirmed, never consumed) and duplicated messages. A client whose
//! connection fails reconnects to the next URI of `--uri` and goes on.
//! One JSON line on stdout, a table on stderr.
//!
//! `--probe connect` and `--probe first-delivery` instead wait for a broker
//! that is starting: they print when the first AMQP connection was accepted
//! (and when the first message of `--queue` arrived), as Unix milliseconds.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::Confirmation;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, PublisherConfirm};
use serde_json::{json, Value};
use warren_bench::{
    cpu_us_per_msg, percentiles, process_cpu_us, read_stamp, stamp, Ledger, LongestGap, UriRing, MAX_PRODUCERS,
    STAMP_LEN,
};

#[derive(Parser, Clone, Debug)]
#[command(name = "warren-perf", about = "AMQP load tool: rates, latency, loss")]
struct Args {
    /// AMQP URI(s), comma separated. Client i starts on URI i modulo the
    /// list and moves to the next one after a connection error.
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
    /// Body size in bytes (at least 16: the stamp).
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
    /// A client gives up after this many seconds without a working connection.
    #[arg(long, default_value_t = 30)]
    reconnect_timeout: u64,
    /// Consume a stream (`--queue-type stream`) from this
    /// `x-stream-offset` (`first`, `last`, `next`, or an integer offset);
    /// a stream cannot be purged, so give a fresh `--queue` with it.
    #[arg(long)]
    stream_offset: Option<String>,

    /// Keep the messages already in the queue (default: purge at start).
    #[arg(long)]
    no_purge: bool,
    /// Wait for a starting broker instead of running load (see above).
    #[arg(long, value_enum)]
    probe: Option<Probe>,
    /// Seconds a probe waits.
    #[arg(long, default_value_t = 300)]
    probe_timeout: u64,
    /// A label for the JSON line.
    #[arg(long, default_value = "")]
    label: String,
    /// Report when every this many confirms (all producers) had come, in
    /// ms since the first publish (`confirm_milestones_ms`; 0 = off): the
    /// confirm rate of the first and of the last million of a long fill.
    #[arg(long, default_value_t = 0)]
    milestone: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Probe {
    /// Until the first AMQP connection is accepted.
    Connect,
    /// Until the first message of --queue is delivered (basic.consume).
    FirstDelivery,
}

#[derive(Default)]
struct Shared {
    ledger: Ledger,
    latencies_us: Vec<u64>,
    consumed: u64,
    last_consume: Option<Instant>,
    consumer_reconnects: u64,
    /// Longest time without a publisher confirm (any producer).
    confirm_gap: LongestGap,
    /// The first few connection errors, for the report.
    errors: Vec<String>,
    /// Confirms so far (all producers), and when each `--milestone`
    /// multiple of them was reached, since `publish_start`.
    acked: u64,
    milestone: u64,
    publish_start: Option<Instant>,
    milestones_ms: Vec<u64>,
}

impl Shared {
    fn error(&mut self, who: &str, e: &anyhow::Error) {
        if self.errors.len() < 8 {
            self.errors.push(format!("{who}: {e:#}"));
        }
    }
}

/// What one producer did.
#[derive(Default, Debug)]
struct ProducerStats {
    published: u64,
    confirmed: u64,
    nacked: u64,
    /// Published on a connection that failed before its confirm came.
    unconfirmed: u64,
    reconnects: u64,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.size >= STAMP_LEN, "--size must be at least {STAMP_LEN}");
    anyhow::ensure!(args.producers <= MAX_PRODUCERS, "at most {MAX_PRODUCERS} producers");
    anyhow::ensure!(!args.uri.is_empty(), "--uri is empty");
    if let Some(probe) = args.probe {
        return run_probe(&args, probe).await;
    }
    let cpu_start = process_cpu_us();
    let epoch = Instant::now();
    let shared = Arc::new(Mutex::new(Shared {
        milestone: args.milestone,
        ..Shared::default()
    }));

    let mut setup_ring = UriRing::new(args.uri.clone(), 0);
    let (_setup_conn, setup) = open_channel(&mut setup_ring, &args).await?;
    declare(&setup, &args).await.context("declaring the queue")?;
    if !args.no_purge && args.queue_type.as_deref() != Some("stream") {
        setup
            .queue_purge(args.queue.as_str().into(), QueuePurgeOptions::default())
            .await?;
    }

    let mut consumers = Vec::new();
    for i in 0..args.consumers {
        let ring = UriRing::new(args.uri.clone(), i as usize);
        consumers.push(tokio::spawn(consume(ring, args.clone(), shared.clone(), epoch)));
    }
    // Let consumers register before the first publish.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let start = Instant::now();
    if let Ok(mut s) = shared.lock() {
        s.publish_start = Some(start);
    }
    let mut producers = Vec::new();
    for p in 0..args.producers {
        let ring = UriRing::new(args.uri.clone(), p as usize);
        producers.push(tokio::spawn(produce(ring, p, args.clone(), shared.clone(), epoch)));
    }
    let mut total = ProducerStats::default();
    for p in producers {
        let r = p.await?;
        total.published += r.published;
        total.confirmed += r.confirmed;
        total.nacked += r.nacked;
        total.unconfirmed += r.unconfirmed;
        total.reconnects += r.reconnects;
    }
    let publish_secs = start.elapsed().as_secs_f64();
    let ready_at_publish_end = ready_count(&setup, &mut setup_ring, &args).await;
    let consumed_at_publish_end = shared.lock().map(|s| s.consumed).unwrap_or(0);

    let target = if args.confirm > 0 {
        total.confirmed
    } else {
        total.published
    };
    let drain_deadline = Instant::now() + Duration::from_secs(args.drain_timeout);
    let all_gone = || consumers.iter().all(tokio::task::JoinHandle::is_finished);
    while args.consumers > 0 && !all_gone() {
        // Distinct messages, not deliveries: redeliveries after a consumer
        // reconnect must not end the drain early (2026-11-29: 400
        // duplicates ended it 44 messages short, reported as lost).
        let drained = shared
            .lock()
            .map(|s| {
                if args.confirm > 0 {
                    s.ledger.confirmed_pending() == 0
                } else {
                    s.ledger.consumed_unique() >= target
                }
            })
            .unwrap_or(false);
        if drained || Instant::now() > drain_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for c in &consumers {
        c.abort();
    }
    let ready_at_end = ready_count(&setup, &mut setup_ring, &args).await;
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
            total.published.saturating_sub(accounting.consumed_unique)
        };
        json!({
            "label": args.label, "client": "lapin", "uri": args.uri, "queue": args.queue,
            "queue_type": args.queue_type, "rate_limit": args.rate,
            "producers": args.producers, "consumers": args.consumers, "size": args.size,
            "persistent": args.persistent, "durable": args.durable, "confirm_window": args.confirm,
            "prefetch": args.prefetch, "auto_ack": args.auto_ack,
            "published": total.published, "confirmed": total.confirmed, "nacked": total.nacked,
            "unconfirmed": total.unconfirmed, "consumed": s.consumed,
            "publish_secs": publish_secs,
            "publish_rate": total.published as f64 / publish_secs,
            "confirm_rate": if args.confirm > 0 { total.confirmed as f64 / publish_secs } else { 0.0 },
            "consume_rate": consume_secs.map_or(0.0, |secs| s.consumed as f64 / secs),
            "latency_us": lat,
            "max_confirm_gap_ms": s.confirm_gap.longest().map(|gap| gap.as_secs_f64() * 1000.0),
            "confirm_milestones_ms": s.milestones_ms,
            "lost": lost,
            "duplicates": accounting.duplicates,
            "backlog_at_publish_end": total.published.saturating_sub(consumed_at_publish_end),
            "ready_at_publish_end": ready_at_publish_end,
            "ready_at_end": ready_at_end,
            "reconnects": total.reconnects + s.consumer_reconnects,
            "producer_reconnects": total.reconnects,
            "consumer_reconnects": s.consumer_reconnects,
            "errors": s.errors,
            "cpu_us": cpu_us,
            "cpu_us_per_msg": cpu_us.map(|c| cpu_us_per_msg(c, total.published, s.consumed)),
        })
    };
    println!("{report}");
    eprint!("{}", table(&report));
    Ok(())
}

/// The report as a two-column table for people.
fn table(r: &Value) -> String {
    let num = |k: &str| r[k].as_f64().map_or_else(|| "–".to_owned(), |v| format!("{v:.0}"));
    let lat = |k: &str| {
        r["latency_us"][k]
            .as_u64()
            .map_or_else(|| "–".to_owned(), |us| format!("{:.1} ms", us as f64 / 1000.0))
    };
    let rows = [
        ("label", r["label"].as_str().unwrap_or("").to_owned()),
        (
            "published",
            format!("{} ({} msg/s)", num("published"), num("publish_rate")),
        ),
        (
            "confirmed",
            format!(
                "{} ({} msg/s), nacked {}, unconfirmed {}",
                num("confirmed"),
                num("confirm_rate"),
                num("nacked"),
                num("unconfirmed")
            ),
        ),
        (
            "consumed",
            format!("{} ({} msg/s)", num("consumed"), num("consume_rate")),
        ),
        (
            "latency",
            format!(
                "p50 {} p95 {} p99 {} max {}",
                lat("p50"),
                lat("p95"),
                lat("p99"),
                lat("max")
            ),
        ),
        ("lost / duplicates", format!("{} / {}", num("lost"), num("duplicates"))),
        (
            "longest time without a confirm",
            format!("{} ms", num("max_confirm_gap_ms")),
        ),
        (
            "ready in queue",
            format!(
                "{} at publish end, {} at end",
                num("ready_at_publish_end"),
                num("ready_at_end")
            ),
        ),
        ("reconnects", num("reconnects")),
        (
            "client CPU",
            format!(
                "{} ms, {} µs/msg",
                r["cpu_us"].as_u64().map_or(0, |c| c / 1000),
                r["cpu_us_per_msg"]
                    .as_f64()
                    .map_or_else(|| "–".to_owned(), |v| format!("{v:.1}"))
            ),
        ),
    ];
    let mut out = String::new();
    for (k, v) in rows {
        out.push_str(&format!("{k:>18} | {v}\n"));
    }
    if let Some(errors) = r["errors"].as_array().filter(|e| !e.is_empty()) {
        for e in errors {
            out.push_str(&format!("{:>18} | {}\n", "error", e.as_str().unwrap_or("")));
        }
    }
    out
}

async fn connect(uri: &str) -> anyhow::Result<Connection> {
    Connection::connect(uri, ConnectionProperties::default())
        .await
        .with_context(|| format!("connecting to {uri}"))
}

/// Opens a connection and channel, moving along the ring until one works
/// or `--reconnect-timeout` passes.
async fn open_channel(ring: &mut UriRing, args: &Args) -> anyhow::Result<(Connection, Channel)> {
    let deadline = Instant::now() + Duration::from_secs(args.reconnect_timeout);
    loop {
        let attempt = async {
            let conn = connect(ring.current()).await?;
            let ch = conn.create_channel().await?;
            anyhow::Ok((conn, ch))
        };
        match attempt.await {
            Ok(pair) => return Ok(pair),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => {
                ring.advance();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn declare(ch: &Channel, args: &Args) -> anyhow::Result<u32> {
    let mut qargs = FieldTable::default();
    if let Some(t) = &args.queue_type {
        qargs.insert(
            "x-queue-type".into(),
            lapin::types::AMQPValue::LongString(t.as_str().into()),
        );
    }
    let q = ch
        .queue_declare(
            args.queue.as_str().into(),
            QueueDeclareOptions {
                durable: args.durable,
                ..QueueDeclareOptions::default()
            },
            qargs,
        )
        .await?;
    Ok(q.message_count())
}

/// Ready messages of the queue (passive declare); on a failed channel it
/// tries a fresh connection once. `None` if neither works.
async fn ready_count(ch: &Channel, ring: &mut UriRing, args: &Args) -> Option<u32> {
    let passive = |ch: Channel| async move {
        ch.queue_declare(
            args.queue.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map(|q| q.message_count())
    };
    if let Ok(n) = passive(ch.clone()).await {
        return Some(n);
    }
    ring.advance();
    let (_conn, ch) = open_channel(ring, args).await.ok()?;
    passive(ch).await.ok()
}

async fn produce(
    mut ring: UriRing,
    producer: u32,
    args: Args,
    shared: Arc<Mutex<Shared>>,
    epoch: Instant,
) -> ProducerStats {
    let mut st = ProducerStats::default();
    let start = Instant::now();
    let stop_at = args.duration.map(|d| start + Duration::from_secs(d));
    let mut last_ok = Instant::now();
    let mut in_flight = VecDeque::new();
    loop {
        let session = produce_session(
            ring.current(),
            producer,
            &args,
            &shared,
            epoch,
            (start, stop_at),
            &mut st,
            &mut in_flight,
            &mut last_ok,
        );
        match session.await {
            Ok(()) => break,
            Err(e) => {
                st.unconfirmed += in_flight.len() as u64;
                in_flight.clear();
                if let Ok(mut s) = shared.lock() {
                    s.error(&format!("producer {producer}"), &e);
                }
                let over = stop_at.is_some_and(|t| Instant::now() >= t) || st.published >= args.count;
                if over || last_ok.elapsed() > Duration::from_secs(args.reconnect_timeout) {
                    break;
                }
                st.reconnects += 1;
                ring.advance();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    st
}

#[allow(clippy::too_many_arguments)]
async fn produce_session(
    uri: &str,
    producer: u32,
    args: &Args,
    shared: &Mutex<Shared>,
    epoch: Instant,
    (start, stop_at): (Instant, Option<Instant>),
    st: &mut ProducerStats,
    in_flight: &mut VecDeque<(u64, PublisherConfirm)>,
    last_ok: &mut Instant,
) -> anyhow::Result<()> {
    let conn = connect(uri).await?;
    let ch = conn.create_channel().await?;
    if args.confirm > 0 {
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
    }
    *last_ok = Instant::now();
    let mut body = vec![0u8; args.size];
    let props = if args.persistent {
        BasicProperties::default().with_delivery_mode(2)
    } else {
        BasicProperties::default()
    };
    while st.published < args.count {
        if stop_at.is_some_and(|t| Instant::now() >= t) {
            break;
        }
        let seq = st.published;
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
        st.published += 1;
        if args.confirm > 0 {
            in_flight.push_back((seq, confirm));
            while in_flight.len() >= args.confirm {
                settle_one(in_flight, producer, shared, st).await?;
            }
        }
    }
    while !in_flight.is_empty() {
        settle_one(in_flight, producer, shared, st).await?;
    }
    let _ = conn.close(200, "done".into()).await;
    Ok(())
}

/// Waits for the oldest confirm. On error the message stays counted as
/// unconfirmed (the caller counts what is left in `in_flight`).
async fn settle_one(
    in_flight: &mut VecDeque<(u64, PublisherConfirm)>,
    producer: u32,
    shared: &Mutex<Shared>,
    st: &mut ProducerStats,
) -> anyhow::Result<()> {
    let Some((seq, confirm)) = in_flight.pop_front() else {
        return Ok(());
    };
    match confirm.await {
        Ok(Confirmation::Ack(_)) => {
            st.confirmed += 1;
            if let Ok(mut s) = shared.lock() {
                s.ledger.confirmed(producer, seq);
                let now = Instant::now();
                s.confirm_gap.observe(now);
                s.acked += 1;
                if s.milestone > 0 && s.acked % s.milestone == 0 {
                    let ms = s.publish_start.map_or(0, |t| (now - t).as_millis() as u64);
                    s.milestones_ms.push(ms);
                }
            }
        }
        Ok(_) => st.nacked += 1,
        Err(e) => {
            st.unconfirmed += 1;
            return Err(e.into());
        }
    }
    Ok(())
}

async fn consume(mut ring: UriRing, args: Args, shared: Arc<Mutex<Shared>>, epoch: Instant) {
    let mut last_ok = Instant::now();
    loop {
        let result = consume_session(ring.current(), &args, &shared, epoch, &mut last_ok).await;
        let e = result
            .err()
            .unwrap_or_else(|| anyhow::anyhow!("the delivery stream ended"));
        if let Ok(mut s) = shared.lock() {
            s.error("consumer", &e);
        }
        if last_ok.elapsed() > Duration::from_secs(args.reconnect_timeout) {
            return;
        }
        if let Ok(mut s) = shared.lock() {
            s.consumer_reconnects += 1;
        }
        ring.advance();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn consume_session(
    uri: &str,
    args: &Args,
    shared: &Mutex<Shared>,
    epoch: Instant,
    last_ok: &mut Instant,
) -> anyhow::Result<()> {
    let conn = connect(uri).await?;
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
            warren_bench::stream_offset_arguments(args.stream_offset.as_deref()),
        )
        .await?;
    *last_ok = Instant::now();
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
        *last_ok = Instant::now();
    }
    Ok(())
}

/// Longest a probe waits for one connection attempt.
const PROBE_STEP: Duration = Duration::from_secs(10);

/// `--probe`: retries until a connection (and, for `first-delivery`, a
/// message) arrives, then prints one JSON line with Unix milliseconds.
async fn run_probe(args: &Args, probe: Probe) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(args.probe_timeout);
    let uri = &args.uri[0];
    let started_unix_ms = unix_ms();
    // A broker that is starting or stopping may accept TCP and then never
    // answer: every step is bounded, so the probe ends by its deadline.
    let step = || deadline.saturating_duration_since(Instant::now()).min(PROBE_STEP);
    let (conn, connected_unix_ms) = loop {
        match tokio::time::timeout(step(), connect(uri)).await {
            Ok(Ok(c)) => break (c, unix_ms()),
            Ok(Err(e)) if Instant::now() >= deadline => return Err(e),
            Err(_) if Instant::now() >= deadline => anyhow::bail!("no AMQP connection within the probe timeout"),
            _ => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    };
    let mut out = json!({
        "label": args.label, "probe": format!("{probe:?}"), "uri": uri,
        "probe_started_unix_ms": started_unix_ms, "connected_unix_ms": connected_unix_ms,
    });
    if probe == Probe::FirstDelivery {
        let mut conn = conn;
        let (first_unix_ms, queued) = loop {
            let attempt = async {
                let ch = conn.create_channel().await?;
                ch.basic_qos(1, BasicQosOptions::default()).await?;
                let mut consumer = ch
                    .basic_consume(
                        args.queue.as_str().into(),
                        "".into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
                let first = consumer.next().await.context("no delivery")??;
                let at = unix_ms();
                let ready = ch
                    .queue_declare(
                        args.queue.as_str().into(),
                        QueueDeclareOptions {
                            passive: true,
                            ..QueueDeclareOptions::default()
                        },
                        FieldTable::default(),
                    )
                    .await?
                    .message_count();
                drop(first);
                anyhow::Ok((at, u64::from(ready) + 1))
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            let outcome = tokio::time::timeout(remaining, attempt)
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("no delivery within the probe timeout")));
            match outcome {
                Ok(r) => break r,
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    if !conn.status().connected() {
                        if let Ok(Ok(c)) = tokio::time::timeout(step(), connect(uri)).await {
                            conn = c;
                        }
                    }
                }
            }
        };
        out["first_delivery_unix_ms"] = json!(first_unix_ms);
        out["queued_at_first_delivery"] = json!(queued);
        let _ = conn.close(200, "done".into()).await;
    } else {
        let _ = conn.close(200, "done".into()).await;
    }
    println!("{out}");
    Ok(())
}
