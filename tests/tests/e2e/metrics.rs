//! Prometheus metrics over HTTP from the real binary (issue 10, item 4, in
//! part): the text is parsed by a strict parser of the exposition format,
//! and the values follow what a lapin client does.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use warren_e2e::amqp::{self, plain_queue};
use warren_e2e::{broker_with_channel, within};

/// One sample: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses Prometheus text format 0.0.4: `# HELP`/`# TYPE` lines, samples
/// `name{label="value",...} number`. Every sample's family must have a
/// TYPE line before it; label values may hold `\\`, `\"` and `\n`.
fn parse_exposition(text: &str) -> anyhow::Result<Vec<Sample>> {
    let mut typed = BTreeMap::new();
    let mut samples = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let at = || format!("line {}: {line:?}", number + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut words = rest.splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("HELP"), Some(name), _) if valid_name(name) => {}
                (Some("TYPE"), Some(name), Some(kind))
                    if valid_name(name) && ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) =>
                {
                    if typed.insert(name.to_owned(), kind.to_owned()).is_some() {
                        bail!("{}: a second TYPE for {name}", at());
                    }
                }
                _ => bail!("{}: not a HELP or TYPE line", at()),
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).with_context(at)?;
        let name = &line[..name_end];
        anyhow::ensure!(valid_name(name), "{}: bad metric name", at());
        // A histogram's or summary's samples are typed by their family.
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .filter(|base| matches!(typed.get(*base).map(String::as_str), Some("histogram" | "summary")))
            .unwrap_or(name);
        anyhow::ensure!(typed.contains_key(family), "{}: sample before its TYPE", at());
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(inner) = rest.strip_prefix('{') {
            let mut i = 0;
            loop {
                if let Some(after) = inner[i..].strip_prefix('}') {
                    rest = after;
                    break;
                }
                let eq = inner[i..].find("=\"").with_context(at)? + i;
                let key = &inner[i..eq];
                anyhow::ensure!(valid_name(key), "{}: bad label name {key:?}", at());
                let mut value = String::new();
                let mut j = eq + 2;
                let mut chars = inner[j..].chars();
                loop {
                    let c = chars.next().with_context(at)?;
                    j += c.len_utf8();
                    match c {
                        '\\' => {
                            let escaped = chars.next().with_context(at)?;
                            j += escaped.len_utf8();
                            value.push(match escaped {
                                '\\' => '\\',
                                '"' => '"',
                                'n' => '\n',
                                other => bail!("{}: bad escape \\{other}", at()),
                            });
                        }
                        '"' => break,
                        other => value.push(other),
                    }
                }
                labels.insert(key.to_owned(), value);
                i = j;
                if inner[i..].starts_with(',') {
                    i += 1;
                } else if !inner[i..].starts_with('}') {
                    bail!("{}: expected , or }} after a label", at());
                }
            }
        }
        let value = rest.strip_prefix(' ').with_context(at)?;
        let value: f64 = value.parse().with_context(at)?;
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    Ok(samples)
}

/// `GET path` over a plain TCP connection; the body, if the status is 200.
async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut response = Vec::new();
    within("HTTP response", stream.read_to_end(&mut response)).await?;
    let response = String::from_utf8(response)?;
    let (head, body) = response.split_once("\r\n\r\n").context("no end of headers")?;
    anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "GET {path}: {head}");
    anyhow::ensure!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "GET {path}: {head}"
    );
    Ok(body.to_owned())
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

#[test]
fn the_parser_refuses_what_the_format_does_not_allow() {
    assert!(parse_exposition("# TYPE a gauge\na 1\n").is_ok());
    assert!(parse_exposition("a 1\n").is_err(), "no TYPE");
    assert!(
        parse_exposition("# TYPE a gauge\na{b=\"x\"} one\n").is_err(),
        "bad value"
    );
    assert!(
        parse_exposition("# TYPE a gauge\na{b=x} 1\n").is_err(),
        "unquoted label"
    );
    assert!(parse_exposition("# TYPE 1a gauge\n").is_err(), "bad name");
    assert!(parse_exposition("# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 2\nh_count 1\n").is_ok());
    assert!(
        parse_exposition("# TYPE h gauge\nh_bucket{le=\"1\"} 1\n").is_err(),
        "_bucket of a gauge"
    );
    let parsed = parse_exposition("# TYPE a gauge\na{b=\"q\\\"1\\\\\\n\",c=\"\"} 2\n").expect("escapes");
    assert_eq!(parsed[0].labels["b"], "q\"1\\\n");
    assert_eq!(parsed[0].labels["c"], "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_metrics_follow_the_broker_and_parse() -> anyhow::Result<()> {
    let (broker, conn, ch) = broker_with_channel().await?;
    let addr = broker.prometheus_addr().context("no prometheus listening line")?;
    plain_queue(&ch, "metrics-q").await?;
    for _ in 0..3 {
        amqp::publish(&ch, "", "metrics-q", b"m").await?;
    }
    // The publishes are applied once a passive declare sees them.
    assert_eq!(amqp::message_count(&ch, "metrics-q").await?, 3);

    let samples = parse_exposition(&http_get(addr, "/metrics").await?)?;
    assert_eq!(
        value(
            &samples,
            "rabbitmq_identity_info",
            &[("rabbitmq_node", "warren@node-1")]
        ),
        Some(1.0)
    );
    assert!(value(&samples, "rabbitmq_build_info", &[]).is_some());
    assert_eq!(value(&samples, "rabbitmq_queues", &[]), Some(1.0));
    assert_eq!(value(&samples, "rabbitmq_queue_messages_ready", &[]), Some(3.0));
    assert!(value(&samples, "rabbitmq_connections", &[]) >= Some(1.0));
    assert!(value(&samples, "rabbitmq_raft_term_total", &[]) >= Some(1.0));
    assert!(value(&samples, "rabbitmq_process_resident_memory_bytes", &[]) > Some(0.0));
    assert!(value(&samples, "rabbitmq_disk_space_available_bytes", &[]) > Some(0.0));
    assert!(samples.iter().all(|s| !s.name.starts_with("rabbitmq_detailed_")));

    let detailed = parse_exposition(&http_get(addr, "/metrics/per-object").await?)?;
    assert_eq!(
        value(
            &detailed,
            "rabbitmq_detailed_queue_messages_ready",
            &[("vhost", "/"), ("queue", "metrics-q")]
        ),
        Some(3.0)
    );
    let _ = amqp::drain(&ch, "metrics-q").await?;
    // Publish to nowhere: counted as dropped, not routed.
    amqp::publish(&ch, "amq.direct", "nobody", b"x").await?;
    assert_eq!(amqp::message_count(&ch, "metrics-q").await?, 0);
    // On a confirming channel: two confirmed, one returned (mandatory),
    // one got with a manual ack and acked.
    let confirming = within("channel.open", conn.create_channel()).await?;
    within(
        "confirm.select",
        confirming.confirm_select(lapin::options::ConfirmSelectOptions::default()),
    )
    .await?;
    for _ in 0..2 {
        amqp::publish(&confirming, "", "metrics-q", b"c").await?;
    }
    amqp::publish_with(
        &confirming,
        "amq.direct",
        "nobody",
        b"r",
        lapin::BasicProperties::default(),
        true,
    )
    .await?;
    let got = within(
        "basic.get",
        confirming.basic_get("metrics-q".into(), lapin::options::BasicGetOptions { no_ack: false }),
    )
    .await?
    .context("a message to get")?;
    within(
        "basic.ack",
        got.delivery.ack(lapin::options::BasicAckOptions::default()),
    )
    .await?;
    assert_eq!(amqp::message_count(&ch, "metrics-q").await?, 1);

    let samples = parse_exposition(&http_get(addr, "/metrics").await?)?;
    assert_eq!(value(&samples, "rabbitmq_queue_messages_ready", &[]), Some(1.0));
    let counter = |what: &str| {
        value(
            &samples,
            &format!("rabbitmq_global_messages_{what}_total"),
            &[("protocol", "amqp091")],
        )
    };
    assert_eq!(counter("received"), Some(7.0));
    assert_eq!(counter("routed"), Some(5.0));
    assert_eq!(counter("unroutable_dropped"), Some(1.0));
    assert_eq!(counter("unroutable_returned"), Some(1.0));
    assert_eq!(counter("confirmed"), Some(3.0), "two routed and the returned one");
    assert_eq!(counter("delivered_get_auto_ack"), Some(3.0), "drained by get");
    assert_eq!(counter("delivered_get_manual_ack"), Some(1.0));
    assert_eq!(counter("delivered"), Some(4.0));
    assert_eq!(counter("acknowledged"), Some(1.0));
    assert_eq!(counter("redelivered"), Some(0.0));
    assert_eq!(counter("received_confirm"), Some(3.0), "the confirming channel's three");
    assert!(counter("get_empty") >= Some(1.0), "drain ends on an empty get");

    // Every series the Grafana dashboards query is there.
    let missing: Vec<_> = warren_http::prometheus::DASHBOARD_SERIES
        .iter()
        .filter(|name| !samples.iter().any(|s| s.name == **name))
        .collect();
    assert!(missing.is_empty(), "missing series: {missing:?}");
    let amqp091 = [("protocol", "amqp091")];
    // Seven one-byte bodies.
    assert_eq!(
        value(&samples, "rabbitmq_message_size_bytes_count", &amqp091),
        Some(7.0)
    );
    assert_eq!(value(&samples, "rabbitmq_message_size_bytes_sum", &amqp091), Some(7.0));
    assert_eq!(
        value(&samples, "rabbitmq_message_size_bytes_bucket", &[("le", "100.0")]),
        Some(7.0)
    );
    assert_eq!(value(&samples, "rabbitmq_connections_opened_total", &[]), Some(1.0));
    assert_eq!(value(&samples, "rabbitmq_channels_opened_total", &[]), Some(2.0));
    assert_eq!(value(&samples, "rabbitmq_channels", &[]), Some(2.0));
    assert_eq!(value(&samples, "rabbitmq_queues_created_total", &[]), Some(1.0));
    assert!(
        value(&samples, "rabbitmq_queues_declared_total", &[]) > Some(1.0),
        "passive declares count as declares"
    );
    assert_eq!(value(&samples, "rabbitmq_global_publishers", &[]), Some(2.0));
    let applied = value(&samples, "rabbitmq_raft_last_applied_index", &[]).context("applied")?;
    assert!(applied > 0.0);
    assert!(value(&samples, "rabbitmq_raft_commit_index", &[]) >= Some(applied));
    assert!(value(&samples, "warren_raft_batches_proposed_total", &[]) >= Some(1.0));
    assert!(value(&samples, "warren_raft_commit_seconds_count", &[]) >= Some(1.0));
    assert!(value(&samples, "warren_raft_apply_seconds_count", &[]) >= Some(applied));
    assert!(value(&samples, "rabbitmq_process_open_fds", &[]) > Some(0.0));
    let open_fds = value(&samples, "rabbitmq_process_open_fds", &[]).context("open fds")?;
    let max_fds = value(&samples, "rabbitmq_process_max_fds", &[]).context("max fds")?;
    assert!(max_fds >= open_fds, "{max_fds} < {open_fds}");

    // Closing the confirming channel: one closed, one publisher fewer.
    within("channel.close", confirming.close(200, "bye".into())).await?;
    warren_e2e::eventually(
        "the channel counted as closed",
        std::time::Duration::from_secs(10),
        || async {
            let samples = parse_exposition(&http_get(addr, "/metrics").await?)?;
            Ok((value(&samples, "rabbitmq_channels_closed_total", &[]) == Some(1.0)
                && value(&samples, "rabbitmq_global_publishers", &[]) == Some(1.0)
                && value(&samples, "rabbitmq_channels", &[]) == Some(1.0))
            .then_some(()))
        },
    )
    .await?;
    within("connection.close", conn.close(200, "bye".into())).await?;
    warren_e2e::eventually(
        "the connection counted as closed",
        std::time::Duration::from_secs(10),
        || async {
            let samples = parse_exposition(&http_get(addr, "/metrics").await?)?;
            Ok((value(&samples, "rabbitmq_connections_closed_total", &[]) == Some(1.0)
                && value(&samples, "rabbitmq_channels_closed_total", &[]) == Some(2.0)
                && value(&samples, "rabbitmq_global_publishers", &[]) == Some(0.0))
            .then_some(()))
        },
    )
    .await?;
    drop(broker);
    Ok(())
}
