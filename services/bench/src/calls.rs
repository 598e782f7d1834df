//! What cloudpop's processes asked of their backends during a mode: the store (fs or S3),
//! the maildrop lock, the abuse limits and the auth service (gRPC, both ends), read from
//! the `*_request_duration_seconds` histograms on each process's admin port (`/metrics`)
//! before and after the mode. The difference says what one session costs, e.g. one S3 list
//! and 50 S3 opens per retr-all session, and how long each call took on average.
//!
//! The counts include the warm-up and the sessions that finished after the window, so they
//! are divided by every session (or message) the mode completed, not only the counted ones.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The families read, by the short name used in reports.
const FAMILIES: [(&str, &str); 5] = [
    ("store", "cloudpop_store_request_duration_seconds"),
    ("lock", "cloudpop_lock_request_duration_seconds"),
    ("limits", "cloudpop_limits_request_duration_seconds"),
    (
        "grpc-client",
        "cloudpop_grpc_client_request_duration_seconds",
    ),
    (
        "grpc-server",
        "cloudpop_grpc_server_request_duration_seconds",
    ),
];

/// Per call name (`store s3 list`, `lock redis acquire`, …): the count and the seconds
/// spent, summed over the processes scraped.
pub(crate) type Snapshot = BTreeMap<String, (f64, f64)>;

/// Calls of one kind made during a mode.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Calls {
    pub(crate) name: String,
    pub(crate) count: u64,
    /// Per completed session (or message, for the modes counted in messages).
    pub(crate) per_op: f64,
    pub(crate) mean_ms: f64,
}

/// Reads the histograms of every admin port in `admins`.
pub(crate) async fn snapshot(admins: &[SocketAddr]) -> anyhow::Result<Snapshot> {
    let mut out = Snapshot::new();
    for &admin in admins {
        let text = tokio::time::timeout(Duration::from_secs(10), get_metrics(admin))
            .await
            .with_context(|| format!("no answer from {admin}/metrics within 10 s"))??;
        parse(&text, &mut out);
    }
    Ok(out)
}

/// What happened between two snapshots, per completed operation (`ops`).
pub(crate) fn delta(before: &Snapshot, after: &Snapshot, ops: u64) -> Vec<Calls> {
    after
        .iter()
        .filter_map(|(name, &(count, sum))| {
            let (count0, sum0) = before.get(name).copied().unwrap_or((0.0, 0.0));
            let n = count - count0;
            (n >= 1.0).then(|| Calls {
                name: name.clone(),
                count: n as u64,
                per_op: if ops > 0 { n / ops as f64 } else { 0.0 },
                mean_ms: (sum - sum0) / n * 1000.0,
            })
        })
        .collect()
}

/// `GET /metrics` over HTTP/1.0.
async fn get_metrics(admin: SocketAddr) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(admin)
        .await
        .with_context(|| format!("connecting to the admin port {admin}"))?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("{admin}/metrics: no HTTP response");
    };
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!(
            "{admin}/metrics: {}",
            head.lines().next().unwrap_or_default()
        );
    }
    Ok(body.to_owned())
}

/// Adds the `_count` and `_sum` series of [`FAMILIES`] in Prometheus text to `out`.
fn parse(text: &str, out: &mut Snapshot) {
    for line in text.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let Some((metric, labels)) = series.split_once('{') else {
            continue;
        };
        let Some((short, is_count)) = FAMILIES.iter().find_map(|(short, family)| {
            let suffix = metric.strip_prefix(family)?;
            match suffix {
                "_count" => Some((short, true)),
                "_sum" => Some((short, false)),
                _ => None,
            }
        }) else {
            continue;
        };
        let mut name = (*short).to_owned();
        let mut outcome = None;
        for pair in labels.trim_end_matches('}').split("\",") {
            let Some((key, value)) = pair.split_once("=\"") else {
                continue;
            };
            let value = value.trim_end_matches('"');
            if key == "outcome" {
                outcome = Some(value);
            } else {
                name.push(' ');
                name.push_str(value);
            }
        }
        if let Some(outcome) = outcome.filter(|o| *o != "ok") {
            name.push_str(" (");
            name.push_str(outcome);
            name.push(')');
        }
        let entry = out.entry(name).or_insert((0.0, 0.0));
        if is_count {
            entry.0 += value;
        } else {
            entry.1 += value;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_counts_and_sums() {
        let text = "\
# TYPE cloudpop_store_request_duration_seconds histogram
cloudpop_store_request_duration_seconds_bucket{backend=\"s3\",operation=\"list\",outcome=\"ok\",le=\"0.001\"} 1
cloudpop_store_request_duration_seconds_sum{backend=\"s3\",operation=\"list\",outcome=\"ok\"} 0.5
cloudpop_store_request_duration_seconds_count{backend=\"s3\",operation=\"list\",outcome=\"ok\"} 10
cloudpop_grpc_client_request_duration_seconds_count{method=\"Authenticate\",outcome=\"unavailable\"} 2
cloudpop_grpc_client_request_duration_seconds_sum{method=\"Authenticate\",outcome=\"unavailable\"} 4
cloudpop_pop3_sessions_total 3
";
        let mut before = Snapshot::new();
        parse(text, &mut before);
        assert_eq!(before["store s3 list"], (10.0, 0.5));
        assert_eq!(before["grpc-client Authenticate (unavailable)"], (2.0, 4.0));
        assert_eq!(before.len(), 2);
        let mut after = before.clone();
        after.insert("store s3 list".into(), (30.0, 1.5));
        let calls = delta(&before, &after, 10);
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].count, 20);
        assert_eq!(calls[0].per_op, 2.0);
        assert!((calls[0].mean_ms - 50.0).abs() < 1e-9);
    }
}
