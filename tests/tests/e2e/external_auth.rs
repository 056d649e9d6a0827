//! The EXTERNAL mechanism against the binary (issue 13 item 3, ADR 0031):
//! pika logs in as the user its client certificate names, with no
//! password; a certificate naming nobody, no certificate, a mechanism not
//! offered and one not known are refused with RabbitMQ's codes and texts.

use warren_e2e::raw::{self, Outcome, RawClient};
use warren_e2e::tls::TestPki;
use warren_e2e::{python, start_broker_with_config, WarrenProcess};

/// Runs external.py against the broker's AMQPS port in `mode`, presenting
/// certificate `cert` (a [`TestPki`] name) or none.
async fn pika_external(
    broker: &WarrenProcess,
    pki: &TestPki,
    mode: &str,
    cert: Option<&str>,
) -> anyhow::Result<String> {
    let port = broker.amqps_addr().expect("an amqps listening line").port();
    let (cert, key) = match cert {
        Some(name) => (
            pki.path(&format!("{name}.pem")).to_string_lossy().into_owned(),
            pki.path(&format!("{name}-key.pem")).to_string_lossy().into_owned(),
        ),
        None => ("-".to_owned(), "-".to_owned()),
    };
    let ca = pki.path("ca.pem").to_string_lossy().into_owned();
    let output = python::run_script("external.py", port, &[&ca, mode, &cert, &key]).await?;
    println!("{mode} {cert}: {output}");
    Ok(output)
}

/// AMQPS asking for (not requiring) client certificates of the test CA,
/// with `extra` configuration lines.
fn config(pki: &TestPki, extra: &str) -> String {
    format!(
        "{}tls_ca_file = {:?}\n{extra}",
        pki.config_toml(false),
        pki.path("ca.pem")
    )
}

/// The close a raw client gets for choosing `mechanism` on `addr`, and the
/// mechanisms that were offered.
async fn choose(addr: std::net::SocketAddr, mechanism: &str) -> anyhow::Result<(Vec<String>, Outcome)> {
    let mut client = RawClient::connect(addr).await?;
    client.send(raw::PROTOCOL_HEADER).await;
    let start = client.expect_method(raw::ids::CONNECTION_START).await?;
    client.send(&raw::start_ok_frame(mechanism, b"\0guest\0guest")).await;
    Ok((raw::start_mechanisms(&start), client.expect_close().await?))
}

fn expect_closed(outcome: &Outcome, code: u16, text: &str) {
    match outcome {
        Outcome::Closed(close) => {
            assert_eq!(close.code, code, "{close:?}");
            assert!(close.text.contains(text), "{close:?} should say {text:?}");
        }
        Outcome::Eof => panic!("closed without connection.close; expected {code} {text}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_logs_in_as_the_user_its_subject_names() -> anyhow::Result<()> {
    let pki = TestPki::new()?;
    let user = TestPki::ALICE_DN;
    let broker = start_broker_with_config(&config(
        &pki,
        &format!(
            "auth_mechanisms = [\"PLAIN\", \"AMQPLAIN\", \"EXTERNAL\"]\n\
             default_user = {user:?}\ndefault_pass = \"not-used-by-external\"\n"
        ),
    ))
    .await?;
    let output = pika_external(&broker, &pki, "ok", Some("alice")).await?;
    assert!(output.contains("external: ok"), "{output}");
    // A certificate of the CA whose subject names no user.
    let output = pika_external(&broker, &pki, "refused", Some("client")).await?;
    assert!(output.contains("external: refused"), "{output}");
    assert!(output.contains("403"), "{output}");
    assert!(
        output.contains("Login was refused using authentication mechanism EXTERNAL"),
        "{output}"
    );
    // TLS without a certificate: offered, then refused.
    let output = pika_external(&broker, &pki, "refused", None).await?;
    assert!(output.contains("external: refused"), "{output}");
    assert!(broker
        .log_tail(200)
        .contains("connection peer presented no TLS (x.509) certificate"));

    // The plain port never offers EXTERNAL, and refuses it as RabbitMQ does.
    let (offered, outcome) = choose(broker.amqp_addr(), "EXTERNAL").await?;
    assert_eq!(offered, ["PLAIN", "AMQPLAIN"]);
    expect_closed(
        &outcome,
        503,
        "COMMAND_INVALID - invalid authentication mechanism 'EXTERNAL'",
    );
    let (_, outcome) = choose(broker.amqp_addr(), "CRAM-MD5").await?;
    expect_closed(
        &outcome,
        503,
        "COMMAND_INVALID - unknown authentication mechanism 'CRAM-MD5'",
    );
    let (_, outcome) = choose(broker.amqp_addr(), "").await?;
    expect_closed(&outcome, 503, "unknown authentication mechanism ''");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_only_by_common_name_and_not_offered_unless_configured() -> anyhow::Result<()> {
    let pki = TestPki::new()?;
    let broker = start_broker_with_config(&config(
        &pki,
        "auth_mechanisms = [\"EXTERNAL\"]\nssl_cert_login_from = \"common_name\"\n\
         default_user = \"alice\"\ndefault_pass = \"not-used-by-external\"\n",
    ))
    .await?;
    let output = pika_external(&broker, &pki, "ok", Some("alice")).await?;
    assert!(output.contains("external: ok"), "{output}");
    // PLAIN is not configured: refused even with a user's right password.
    let (offered, outcome) = choose(broker.amqp_addr(), "PLAIN").await?;
    assert!(offered.is_empty(), "{offered:?}");
    expect_closed(&outcome, 503, "invalid authentication mechanism 'PLAIN'");
    drop(broker);

    // RabbitMQ's default mechanisms: EXTERNAL is not offered on TLS either.
    let broker = start_broker_with_config(&config(&pki, "")).await?;
    let output = pika_external(&broker, &pki, "unoffered", Some("alice")).await?;
    assert!(output.contains("external: unoffered"), "{output}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_mechanism_setting_stops_the_start() -> anyhow::Result<()> {
    for (line, says) in [
        (
            "auth_mechanisms = [\"PLAIN\", \"GSSAPI\"]\n",
            "unknown authentication mechanism \"GSSAPI\"",
        ),
        ("ssl_cert_login_from = \"subject\"\n", "ssl_cert_login_from must be"),
    ] {
        let refused = start_broker_with_config(line).await.err().expect("the start must fail");
        let text = format!("{refused:#}");
        assert!(text.contains(says), "{line}: {text}");
    }
    Ok(())
}
