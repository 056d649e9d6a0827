//! The run's report: a summary for the terminal and a self-contained
//! HTML page with a timeline (faults, throughput, latency, leader).

use std::fmt::Write as _;

use crate::check::Summary;

fn secs(ms: u64) -> String {
    format!("{:.2} s", ms as f64 / 1000.0)
}

fn opt_secs(ms: Option<u64>) -> String {
    ms.map_or_else(|| "—".to_owned(), secs)
}

/// The summary printed at the end of a run.
pub fn text(summary: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "warren chaos: seed {}, {} nodes, platform {}, schedule {}, {} faults, {}",
        summary.facts.seed,
        summary.facts.nodes.len(),
        summary.facts.platform,
        summary.facts.schedule,
        summary.faults.len(),
        secs(summary.facts.duration_ms)
    );
    let _ = writeln!(
        out,
        "  published {}, confirmed {}, nacked {}, outcome unknown {}",
        summary.published, summary.confirmed, summary.nacked, summary.unknown
    );
    let _ = writeln!(
        out,
        "  delivered {} distinct ({} deliveries, {} redeliveries; {} delivered but never confirmed), foreign {}",
        summary.delivered_unique,
        summary.deliveries,
        summary.redeliveries,
        summary.delivered_unconfirmed,
        summary.foreign
    );
    let _ = writeln!(
        out,
        "  lost {}, unflagged duplicates {}, order violations {}, client errors {:?}",
        summary.lost, summary.unflagged_duplicates, summary.order_violations, summary.errors
    );
    let _ = writeln!(
        out,
        "  longest time without a confirm: {} (from {}); median gap after a fault {}, after a leader kill {}",
        secs(summary.longest_gap_ms),
        secs(summary.longest_gap_from_ms),
        opt_secs(summary.fault_gap_median_ms),
        opt_secs(summary.leader_kill_gap_median_ms)
    );
    if !summary.faults.is_empty() {
        let _ = writeln!(out, "  faults:");
        for fault in &summary.faults {
            let r = &fault.record;
            let _ = writeln!(
                out,
                "    #{:<3} {:>8.2} s  {:<9} {:<22} {:<8} to next confirm {:>8}, longest gap {:>8}, ready after {}{}",
                r.index,
                r.injected_ms as f64 / 1000.0,
                r.kind,
                r.node,
                match r.was_leader {
                    Some(true) => "leader",
                    Some(false) => "follower",
                    None => "",
                },
                opt_secs(fault.gap_to_next_confirm_ms),
                opt_secs(fault.longest_gap_ms),
                opt_secs(r.ready_ms.map(|ready| ready.saturating_sub(r.injected_ms))),
                r.error.as_ref().map(|e| format!("  ERROR {e}")).unwrap_or_default()
            );
        }
    }
    let _ = writeln!(out, "  checks:");
    for check in &summary.checks {
        let _ = writeln!(
            out,
            "    [{}] {}: {}",
            if check.passed { "ok" } else { "FAILED" },
            check.name,
            check.detail
        );
    }
    for anomaly in summary.anomalies.iter().take(10) {
        let _ = writeln!(
            out,
            "  anomaly at {}: {:?} {}",
            secs(anomaly.at_ms),
            anomaly.id,
            anomaly.detail
        );
    }
    let _ = writeln!(out, "{}", if summary.passed() { "PASSED" } else { "FAILED" });
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const WIDTH: f64 = 1100.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;

/// Colours of the fault kinds and of up to eight leaders.
fn fault_colour(kind: &str) -> &'static str {
    match kind {
        "kill" => "#e4572e",
        "pause" => "#f3a712",
        "partition" => "#7b5ea7",
        _ => "#29a0b1",
    }
}

const LEADER_COLOURS: [&str; 8] = [
    "#4e79a7", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#76b7b2", "#bab0ac",
];

/// A self-contained HTML page: the verdict, a timeline, the faults.
pub fn html(summary: &Summary) -> String {
    let seconds = summary.series.len().max(1) as f64;
    let x = |t_ms: f64| LEFT + (WIDTH - LEFT - RIGHT) * (t_ms / 1000.0) / seconds;
    let mut svg = String::new();
    let chart_top = 30.0;
    let chart_h = 170.0;
    let lat_top = chart_top + chart_h + 40.0;
    let lat_h = 130.0;
    let lane_top = lat_top + lat_h + 30.0;
    let lane_h = 24.0;
    let height = lane_top + lane_h + 40.0;
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="11">"##
    );
    // Fault bands across every chart.
    for fault in &summary.faults {
        let r = &fault.record;
        let start = x(r.injected_ms as f64);
        let end_ms = r.ready_ms.or(r.healed_ms).unwrap_or(r.injected_ms + 1000);
        let end = x(end_ms as f64).max(start + 2.0);
        let _ = write!(
            svg,
            r##"<rect x="{start:.1}" y="{}" width="{:.1}" height="{:.1}" fill="{}" opacity="0.18"><title>#{} {} {} at {:.2} s</title></rect><text x="{start:.1}" y="{}" fill="{}">#{} {}</text>"##,
            chart_top,
            end - start,
            lane_top + lane_h - chart_top,
            fault_colour(&r.kind),
            r.index,
            escape(&r.kind),
            escape(&r.node),
            r.injected_ms as f64 / 1000.0,
            chart_top - 4.0 - 10.0 * (r.index % 2) as f64,
            fault_colour(&r.kind),
            r.index,
            escape(&r.kind),
        );
    }
    // Throughput.
    let peak = summary
        .series
        .iter()
        .map(|s| s.confirms.max(s.deliveries))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let y_rate = |v: f64| chart_top + chart_h - chart_h * v / peak;
    let _ = write!(
        svg,
        r##"<text x="4" y="{:.1}">msg/s</text><text x="4" y="{:.1}">{peak:.0}</text><text x="4" y="{:.1}">0</text><line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#999"/>"##,
        chart_top + 12.0,
        chart_top + 26.0,
        chart_top + chart_h,
        WIDTH - RIGHT,
        chart_top + chart_h,
        chart_top + chart_h
    );
    for (name, colour, pick) in [
        (
            "confirms",
            "#1f77b4",
            (|s: &crate::check::SecondOut| s.confirms) as fn(&crate::check::SecondOut) -> u64,
        ),
        ("deliveries", "#2ca02c", |s| s.deliveries),
    ] {
        let points: Vec<String> = summary
            .series
            .iter()
            .map(|s| format!("{:.1},{:.1}", x(s.t as f64 * 1000.0 + 500.0), y_rate(pick(s) as f64)))
            .collect();
        let _ = write!(
            svg,
            r##"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"><title>{name}</title></polyline>"##,
            points.join(" ")
        );
    }
    for s in summary.series.iter().filter(|s| s.errors > 0) {
        let _ = write!(
            svg,
            r##"<line x1="{0:.1}" x2="{0:.1}" y1="{1:.1}" y2="{2:.1}" stroke="#d62728" stroke-width="2"><title>{3} client errors at {4} s</title></line>"##,
            x(s.t as f64 * 1000.0 + 500.0),
            chart_top + chart_h,
            chart_top + chart_h + 8.0,
            s.errors,
            s.t
        );
    }
    // Confirm latency, log scale from 0.1 ms.
    let lat_peak = summary
        .series
        .iter()
        .filter_map(|s| s.latency_max_ms)
        .fold(1.0_f64, f64::max);
    let log_span = (lat_peak / 0.1).log10().max(1.0);
    let y_lat = |ms: f64| lat_top + lat_h - lat_h * ((ms.max(0.1) / 0.1).log10() / log_span);
    let _ = write!(
        svg,
        r##"<text x="4" y="{:.1}">confirm ms</text><text x="4" y="{:.1}">{lat_peak:.0}</text><text x="4" y="{:.1}">0.1</text><line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#999"/>"##,
        lat_top + 12.0,
        lat_top + 26.0,
        lat_top + lat_h,
        WIDTH - RIGHT,
        lat_top + lat_h,
        lat_top + lat_h
    );
    for (name, colour, pick) in [
        (
            "p50",
            "#1f77b4",
            (|s: &crate::check::SecondOut| s.latency_p50_ms) as fn(&crate::check::SecondOut) -> Option<f64>,
        ),
        ("max", "#ff7f0e", |s| s.latency_max_ms),
    ] {
        let points: Vec<String> = summary
            .series
            .iter()
            .filter_map(|s| pick(s).map(|ms| format!("{:.1},{:.1}", x(s.t as f64 * 1000.0 + 500.0), y_lat(ms))))
            .collect();
        let _ = write!(
            svg,
            r##"<polyline fill="none" stroke="{colour}" stroke-width="1.2" points="{}"><title>latency {name}</title></polyline>"##,
            points.join(" ")
        );
    }
    // Leader lane.
    let _ = write!(svg, r##"<text x="4" y="{:.1}">leader</text>"##, lane_top + 16.0);
    let mut names: Vec<&str> = Vec::new();
    let end_ms = summary.facts.duration_ms as f64;
    for (i, (at, leader)) in summary.leaders.iter().enumerate() {
        let until = summary.leaders.get(i + 1).map_or(end_ms, |(next, _)| *next as f64);
        let (colour, label) = match leader {
            Some(name) => {
                let index = names.iter().position(|n| n == name).unwrap_or_else(|| {
                    names.push(name);
                    names.len() - 1
                });
                (LEADER_COLOURS[index % LEADER_COLOURS.len()], name.as_str())
            }
            None => ("#ffffff", "none"),
        };
        let start = x(*at as f64);
        let _ = write!(
            svg,
            r##"<rect x="{start:.1}" y="{lane_top:.1}" width="{:.1}" height="{lane_h}" fill="{colour}" stroke="#666" stroke-width="0.3"><title>leader {} from {:.2} s</title></rect>"##,
            (x(until) - start).max(0.5),
            escape(label),
            *at as f64 / 1000.0
        );
    }
    // Time axis.
    let step = (seconds / 12.0).ceil().max(1.0) as u64;
    for t in (0..=seconds as u64).step_by(usize::try_from(step).unwrap_or(1)) {
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">{t} s</text>"##,
            x(t as f64 * 1000.0),
            lane_top + lane_h + 16.0
        );
    }
    svg.push_str("</svg>");

    let mut checks = String::new();
    for check in &summary.checks {
        let _ = write!(
            checks,
            r##"<tr class="{}"><td>{}</td><td>{}</td><td>{}</td></tr>"##,
            if check.passed { "ok" } else { "bad" },
            if check.passed { "ok" } else { "FAILED" },
            escape(check.name),
            escape(&check.detail)
        );
    }
    let mut faults = String::new();
    for fault in &summary.faults {
        let r = &fault.record;
        let _ = write!(
            faults,
            "<tr><td>{}</td><td>{:.2}</td><td style=\"color:{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            r.index,
            r.injected_ms as f64 / 1000.0,
            fault_colour(&r.kind),
            escape(&r.kind),
            escape(&r.node),
            match r.was_leader {
                Some(true) => "leader",
                Some(false) => "follower",
                None => "?",
            },
            opt_secs(fault.gap_to_next_confirm_ms),
            opt_secs(fault.longest_gap_ms),
            opt_secs(r.ready_ms.map(|ready| ready.saturating_sub(r.injected_ms))),
            escape(r.error.as_deref().unwrap_or(""))
        );
    }
    let verdict = if summary.passed() { "PASSED" } else { "FAILED" };
    format!(
        r##"<!doctype html><html><head><meta charset="utf-8"><title>warren chaos — seed {seed} — {verdict}</title>
<style>body{{font-family:sans-serif;margin:24px;color:#222}}h1 span{{padding:2px 10px;border-radius:4px;color:#fff;background:{badge}}}
table{{border-collapse:collapse;margin:12px 0}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}tr.bad td{{background:#fde2e1}}tr.ok td:first-child{{color:#2a7d2a}}
.figures td:nth-child(2){{text-align:right}} .legend span{{margin-right:14px}}</style></head><body>
<h1>warren chaos <span>{verdict}</span></h1>
<p>seed <b>{seed}</b> · {nodes} nodes ({node_names}) · platform {platform} · schedule {schedule} · {fault_count} faults · {duration}</p>
<table>{checks}</table>
<div class="legend"><span style="color:#1f77b4">— confirms/s, p50 latency</span><span style="color:#2ca02c">— deliveries/s</span><span style="color:#ff7f0e">— max latency</span><span style="color:#d62728">| client errors</span>
<span style="color:#e4572e">■ kill</span><span style="color:#f3a712">■ pause</span><span style="color:#7b5ea7">■ partition</span><span style="color:#29a0b1">■ restart</span> (bands: from the fault to the node ready again)</div>
{svg}
<table class="figures"><tr><th>figure</th><th>value</th></tr>
<tr><td>published</td><td>{published}</td></tr><tr><td>confirmed</td><td>{confirmed}</td></tr><tr><td>nacked</td><td>{nacked}</td></tr><tr><td>outcome unknown</td><td>{unknown}</td></tr>
<tr><td>delivered (distinct)</td><td>{delivered}</td></tr><tr><td>redeliveries</td><td>{redeliveries}</td></tr><tr><td>lost</td><td>{lost}</td></tr>
<tr><td>longest time without a confirm</td><td>{longest}</td></tr><tr><td>median gap to the next confirm after a fault</td><td>{median_all}</td></tr><tr><td>… after a leader kill</td><td>{median_leader}</td></tr></table>
<h2>Faults</h2><table><tr><th>#</th><th>at (s)</th><th>kind</th><th>node</th><th>role</th><th>to next confirm</th><th>longest gap</th><th>ready after</th><th>error</th></tr>{faults}</table>
<p>Generated by <code>warren chaos</code>; the same data is in the JSON report.</p></body></html>
"##,
        seed = summary.facts.seed,
        badge = if summary.passed() { "#2a7d2a" } else { "#c0392b" },
        nodes = summary.facts.nodes.len(),
        node_names = escape(&summary.facts.nodes.join(", ")),
        platform = escape(&summary.facts.platform),
        schedule = escape(&summary.facts.schedule),
        fault_count = summary.faults.len(),
        duration = secs(summary.facts.duration_ms),
        published = summary.published,
        confirmed = summary.confirmed,
        nacked = summary.nacked,
        unknown = summary.unknown,
        delivered = summary.delivered_unique,
        redeliveries = summary.redeliveries,
        lost = summary.lost,
        longest = secs(summary.longest_gap_ms),
        median_all = opt_secs(summary.fault_gap_median_ms),
        median_leader = opt_secs(summary.leader_kill_gap_median_ms),
    )
}
