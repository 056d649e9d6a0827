//! Consumer credit at the consumer's node (ADR 0026), against the binary
//! with pika: the client sees its prefetch while the node holds the rest
//! of what the core assigned, acks bring the next delivery at once, and
//! held deliveries go back not redelivered (`tests/python/consumer_credit.py`).

use warren_e2e::{python, start_broker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pika_sees_its_prefetch_and_held_deliveries_go_back_unredelivered() -> anyhow::Result<()> {
    let broker = start_broker().await?;
    let output = python::run_script("consumer_credit.py", broker.amqp_port(), &[]).await?;
    println!("{output}");
    Ok(())
}
