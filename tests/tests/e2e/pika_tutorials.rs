//! The RabbitMQ tutorial flows, written with pika 1.x exactly as users write
//! them (`tests/python/*.py`), each against its own fresh broker.
//!
//! The first test to run creates `<target dir>/pyvenv` with pika; the others
//! wait for it (flock) and reuse it.

use warren_e2e::{python, start_broker};

async fn run_tutorial(script: &str) -> anyhow::Result<()> {
    let broker = start_broker().await?;
    let output = python::run_script(script, broker.amqp_port(), &[]).await?;
    println!("{output}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pika_hello_world_goes_through_the_default_exchange() -> anyhow::Result<()> {
    run_tutorial("hello_world.py").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pika_work_queue_shares_fairly_and_redelivers_a_killed_workers_task() -> anyhow::Result<()> {
    run_tutorial("work_queues.py").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pika_publish_subscribe_fans_out_to_every_subscriber() -> anyhow::Result<()> {
    run_tutorial("pubsub.py").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pika_routing_delivers_by_severity_through_a_direct_exchange() -> anyhow::Result<()> {
    run_tutorial("routing.py").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pika_topics_match_star_and_hash_patterns() -> anyhow::Result<()> {
    run_tutorial("topics.py").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pika_rpc_answers_on_an_exclusive_reply_queue_by_correlation_id() -> anyhow::Result<()> {
    run_tutorial("rpc.py").await
}
