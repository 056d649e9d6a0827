//! `amqprs-perf`: the transient case of `warren-perf` (one producer, one
//! consumer, no confirms) written on the amqprs client instead of lapin, to
//! measure which client spends less CPU per message (issue 4: on 2 cores the
//! client competes with the broker). Same stamps, same ledger, same JSON
//! field names as `warren-perf` for the fields it has.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amqprs::callbacks::{DefaultChannelCallback, DefaultConnectionCallback};
use amqprs::channel::{
    BasicAckArguments, BasicConsumeArguments, BasicPublishArguments, BasicQosArguments, QueueDeclareArguments,
    QueuePurgeArguments,
};
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::BasicProperties;
use clap::Parser;
use serde_json::json;
use warren_bench::{cpu_us_per_msg, percentiles, process_cpu_us, read_stamp, stamp, Ledger, STAMP_LEN};

#[derive(Parser, Clone, Debug)]
#[command(name = "amqprs-perf", about = "warren-perf's transient case on the amqprs client")]
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
    #[arg(long, default_value_t = 100_000)]
    count: u64,
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.size >= STAMP_LEN, "--size must be at least {STAMP_LEN}");
    let cpu_start = process_cpu_us();
    let epoch = Instant::now();
    let shared = Arc::new(Mutex::new(Shared::default()));

    let setup = open(&args).await?;
    let ch = setup.open_channel(None).await?;
    ch.register_callback(DefaultChannelCallback).await?;
    ch.queue_declare(QueueDeclareArguments::new(&args.queue)).await?;
    ch.queue_purge(QueuePurgeArguments::new(&args.queue)).await?;

    let consumer_conn = open(&args).await?;
    let cch = consumer_conn.open_channel(None).await?;
    cch.register_callback(DefaultChannelCallback).await?;
    cch.basic_qos(BasicQosArguments::new(0, args.prefetch, false)).await?;
    let (_tag, mut rx) = cch
        .basic_consume_rx(
            BasicConsumeArguments::new(&args.queue, "")
                .manual_ack(args.manual_ack)
                .finish(),
        )
        .await?;
    let consumer = {
        let shared = shared.clone();
        let manual_ack = args.manual_ack;
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
                if manual_ack {
                    if let Some(deliver) = &msg.deliver {
                        let _ = cch
                            .basic_ack(BasicAckArguments::new(deliver.delivery_tag(), false))
                            .await;
                    }
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    let producer_conn = open(&args).await?;
    let pch = producer_conn.open_channel(None).await?;
    pch.register_callback(DefaultChannelCallback).await?;
    let start = Instant::now();
    let mut body = vec![0u8; args.size];
    let publish_args = BasicPublishArguments::new("", &args.queue);
    for seq in 0..args.count {
        stamp(&mut body, 0, seq, epoch.elapsed().as_micros() as u64);
        pch.basic_publish(BasicProperties::default(), body.clone(), publish_args.clone())
            .await?;
    }
    let published = args.count;
    let publish_secs = start.elapsed().as_secs_f64();

    let deadline = Instant::now() + Duration::from_secs(args.drain_timeout);
    while shared.lock().map(|s| s.ledger.consumed_unique()).unwrap_or(0) < published && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    consumer.abort();
    // What is still in the queue tells a drain timeout (messages left) from
    // loss (none left, yet not all consumed).
    let mut passive = QueueDeclareArguments::new(&args.queue);
    passive.passive(true);
    let ready_at_end = match ch.queue_declare(passive).await {
        Ok(Some((_, ready, _))) => Some(ready),
        _ => None,
    };
    let cpu_us = match (cpu_start, process_cpu_us()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let report = {
        let mut s = shared.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        let consume_secs = s.last_consume.map(|t| (t - start).as_secs_f64());
        let accounting = s.ledger.account();
        let lat = percentiles(&mut s.latencies_us);
        let report = json!({
            "label": args.label, "client": "amqprs", "size": args.size, "auto_ack": !args.manual_ack,
            "producers": 1, "consumers": 1,
            "published": published, "consumed": s.consumed,
            "publish_rate": published as f64 / publish_secs,
            "consume_rate": consume_secs.map_or(0.0, |secs| s.consumed as f64 / secs),
            "latency_us": lat,
            "lost": published.saturating_sub(accounting.consumed_unique),
            "duplicates": accounting.duplicates,
            "ready_at_end": ready_at_end,
            "cpu_us": cpu_us,
            "cpu_us_per_msg": cpu_us.map(|c| cpu_us_per_msg(c, published, s.consumed)),
        });
        report
    };
    println!("{report}");
    eprintln!(
        "amqprs: published {published} ({:.0} msg/s), consumed {} ({:.0} msg/s), client CPU {:.1} µs/msg",
        report["publish_rate"].as_f64().unwrap_or(0.0),
        report["consumed"],
        report["consume_rate"].as_f64().unwrap_or(0.0),
        report["cpu_us_per_msg"].as_f64().unwrap_or(0.0),
    );
    let _ = producer_conn.close().await;
    let _ = consumer_conn.close().await;
    let _ = setup.close().await;
    Ok(())
}
