//! AMQP over TLS (`amqps`, ADR 0023) against the binary: pika with a CA
//! made at test time, a client that does not trust it, client certificates
//! required and checked, bytes that are not TLS on the TLS port, and a
//! start refused over a bad file.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use warren_e2e::tls::TestPki;
use warren_e2e::{amqp, connect, python, start_broker_with_config, within, WarrenProcess};

async fn pika_tls(broker: &WarrenProcess, pki: &TestPki, mode: &str, cert: Option<&str>) -> anyhow::Result<String> {
    let port = broker.amqps_addr().expect("an amqps listening line").port();
    let ca = pki.path("ca.pem");
    let mut args = vec![ca.to_string_lossy().into_owned(), mode.to_owned()];
    if let Some(name) = cert {
        args.push(pki.path(&format!("{name}.pem")).to_string_lossy().into_owned());
        args.push(pki.path(&format!("{name}-key.pem")).to_string_lossy().into_owned());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = python::run_script("tls.py", port, &args).await?;
    println!("{mode} {cert:?}: {output}");
    Ok(output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pika_talks_amqp_over_tls_and_a_client_that_does_not_trust_the_ca_is_refused() -> anyhow::Result<()> {
    let pki = TestPki::new()?;
    let broker = start_broker_with_config(&pki.config_toml(false)).await?;
    let output = pika_tls(&broker, &pki, "ok", None).await?;
    assert!(output.contains("tls: ok"), "{output}");
    let output = pika_tls(&broker, &pki, "untrusted", None).await?;
    assert!(output.contains("tls: refused"), "{output}");
    assert!(output.contains("CERTIFICATE_VERIFY_FAILED"), "{output}");
    // A client certificate is not asked for, and one sent does no harm.
    let output = pika_tls(&broker, &pki, "ok", Some("stranger")).await?;
    assert!(output.contains("tls: ok"), "{output}");

    // The plain port serves as before, the same queue.
    let conn = connect(&broker.amqp_uri()).await?;
    let ch = within("channel.open", conn.create_channel()).await?;
    assert_eq!(amqp::message_count(&ch, "over-tls").await?, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_and_checked_when_configured() -> anyhow::Result<()> {
    let pki = TestPki::new()?;
    let broker = start_broker_with_config(&pki.config_toml(true)).await?;
    let output = pika_tls(&broker, &pki, "ok", Some("client")).await?;
    assert!(output.contains("tls: ok"), "{output}");
    let output = pika_tls(&broker, &pki, "refused", None).await?;
    assert!(output.contains("tls: refused"), "without a certificate: {output}");
    let output = pika_tls(&broker, &pki, "refused", Some("stranger")).await?;
    assert!(output.contains("tls: refused"), "another CA's certificate: {output}");
    Ok(())
}

/// Plain AMQP, garbage, and a half-open handshake on the TLS port: each
/// socket is closed, nothing else is affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_are_not_tls_on_the_tls_port_close_only_their_socket() -> anyhow::Result<()> {
    let pki = TestPki::new()?;
    let broker = start_broker_with_config(&pki.config_toml(false)).await?;
    let addr = broker.amqps_addr().expect("amqps");
    let mut garbage = vec![0x16, 0x03, 0x01, 0xff, 0xff];
    garbage.extend((0..64 * 1024).map(|i| (i * 7 % 251) as u8));
    for bytes in [b"AMQP\x00\x00\x09\x01".to_vec(), garbage, Vec::new()] {
        let mut socket = tokio::net::TcpStream::connect(addr).await?;
        socket.write_all(&bytes).await?;
        if bytes.is_empty() {
            // Nothing sent: the socket stays until the handshake timeout.
            drop(socket);
            continue;
        }
        let mut sink = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(15), socket.read_to_end(&mut sink)).await;
        match read {
            Ok(Ok(_)) | Ok(Err(_)) => {} // EOF, or a reset after a TLS alert
            Err(_) => anyhow::bail!("the server kept a socket that sent {} bytes of non-TLS", bytes.len()),
        }
        assert!(
            !sink.starts_with(b"AMQP"),
            "the TLS port answered in AMQP: {:?}",
            &sink[..sink.len().min(16)]
        );
    }
    let output = pika_tls(&broker, &pki, "ok", None).await?;
    assert!(output.contains("tls: ok"), "{output}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_bad_tls_file_refuses_to_start_and_names_it() -> anyhow::Result<()> {
    let pki = TestPki::new()?;
    let missing = pki.dir().join("nowhere.pem");
    let config = pki
        .config_toml(false)
        .replace(&format!("{:?}", pki.path("server-key.pem")), &format!("{missing:?}"));
    let refused = start_broker_with_config(&config)
        .await
        .err()
        .expect("the start must fail");
    let text = format!("{refused:#}");
    assert!(text.contains("nowhere.pem"), "{text}");
    assert!(text.contains("configuring AMQP over TLS"), "{text}");
    Ok(())
}
