//! A channel closed by the broker, then reopened under the same number (as
//! pika does), receives deliveries again.

use warren_e2e::{python, start_broker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_number_reused_after_a_server_close_gets_deliveries() -> anyhow::Result<()> {
    let broker = start_broker().await?;
    let output = python::run_script("channel_reuse.py", broker.amqp_port(), &[]).await?;
    println!("{output}");
    Ok(())
}
