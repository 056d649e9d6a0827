//! Drains an existing backlog and reports the consume rate: one consumer,
//! manual ack of every message, the given prefetch (issue 9's drain case;
//! warren-perf counts only the messages of its own run).
//!
//!   warren-drain --uri URI --queue Q --count N [--prefetch 100]
//!
//! Prints one JSON line: consumed, seconds from the first delivery to the
//! last, the rate, and the milliseconds from its start (connection retried
//! while the broker starts) to the first delivery.

use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::{Connection, ConnectionProperties};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    uri: String,
    #[arg(long, default_value = "perf")]
    queue: String,
    /// Messages to consume before stopping.
    #[arg(long)]
    count: u64,
    #[arg(long, default_value_t = 100)]
    prefetch: u16,
    /// Read a stream (`x-queue-type = stream`) from this `x-stream-offset`
    /// (`first`, `last`, `next`, or an integer offset).
    #[arg(long)]
    stream_offset: Option<String>,
    /// Give up when no delivery came for this many seconds.
    #[arg(long, default_value_t = 30)]
    idle_timeout: u64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    // Retries the connection while the broker starts (a restart measures
    // the time from here to the first delivery).
    let conn = loop {
        match Connection::connect(&args.uri, ConnectionProperties::default()).await {
            Ok(conn) => break conn,
            Err(e) if started.elapsed() < Duration::from_secs(args.idle_timeout) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let ch = conn.create_channel().await?;
    ch.basic_qos(args.prefetch, BasicQosOptions::default()).await?;
    let mut consumer = ch
        .basic_consume(
            args.queue.as_str().into(),
            "warren-drain".into(),
            BasicConsumeOptions::default(),
            warren_bench::stream_offset_arguments(args.stream_offset.as_deref()),
        )
        .await?;
    let mut consumed = 0u64;
    let mut first: Option<Instant> = None;
    let mut first_delivery_ms = 0;
    let mut last = Instant::now();
    while consumed < args.count {
        let next = tokio::time::timeout(Duration::from_secs(args.idle_timeout), consumer.next()).await;
        let Ok(Some(delivery)) = next else {
            break;
        };
        let delivery = delivery?;
        if first.is_none() {
            first = Some(Instant::now());
            first_delivery_ms = started.elapsed().as_millis();
        }
        delivery.ack(BasicAckOptions::default()).await?;
        consumed += 1;
        last = Instant::now();
    }
    let secs = first.map_or(0.0, |first| last.duration_since(first).as_secs_f64());
    let rate = if secs > 0.0 { consumed as f64 / secs } else { 0.0 };
    println!(
        "{}",
        serde_json::json!({"queue": args.queue, "consumed": consumed, "secs": secs, "consume_rate": rate,
            "prefetch": args.prefetch, "first_delivery_ms": first_delivery_ms})
    );
    conn.close(200, "drained".into()).await?;
    Ok(())
}
