//! Observability end to end, in cloud mode (a real `redis-server`, a real S3 server, and the
//! `auth`, `lmtp` and `pop3` roles of the built binary):
//!
//! - after real sessions, each role's `/metrics` counts exactly what the clients did, and
//!   every exposition passes `promtool check metrics`;
//! - the session-end and delivery log lines (JSON) say the same, once per session;
//! - an OTLP collector inside the test receives the session's span, its command children,
//!   the store and lock calls, and the auth service's span, all in one trace.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use support::backends::{self, Process};
use support::cloud::front_end;
use support::{Lmtp, Server, WAIT, admin_remote, http_get, message};

// ---- a cloud deployment ----

struct Deployment {
    _redis: Process,
    _s3: Process,
    auth: Server,
    lmtp: Server,
    pop3: Server,
}

/// Starts redis, S3, `auth`, `lmtp` and one `pop3`; `options` adjusts every role.
fn deploy(options: &[(&str, &str)]) -> Deployment {
    let redis = backends::redis();
    let s3 = backends::s3();
    let with = |mut builder: support::ServerBuilder| {
        for (key, value) in options {
            builder = builder.option(key, value);
        }
        builder
    };
    let auth = with(Server::builder().role("auth")).start();
    let lmtp = with(front_end("lmtp", &redis, &s3, &auth)).start();
    let pop3 = with(front_end("pop3", &redis, &s3, &auth)).start();
    let admin = |args: &[&str], stdin: &str| {
        let out = admin_remote(auth.grpc, None, args, stdin);
        assert!(out.status.success(), "admin {args:?}: {}", out.stderr);
    };
    admin(&["tenant", "add", "acme", "--domain", "acme.example"], "");
    admin(
        &["tenant", "set", "acme", "--cleartext-allowed", "true"],
        "",
    );
    admin(&["user", "add", "alice@acme.example"], "alice's secret");
    Deployment {
        _redis: redis,
        _s3: s3,
        auth,
        lmtp,
        pop3,
    }
}

// ---- a POP3 client that counts every byte it receives ----

struct Counted {
    reader: BufReader<TcpStream>,
    received: u64,
}

impl Counted {
    fn connect(addr: SocketAddr) -> Counted {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut pop = Counted {
            reader: BufReader::new(stream),
            received: 0,
        };
        let greeting = pop.line();
        assert!(greeting.starts_with("+OK"), "{greeting}");
        pop
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        self.received += line.len() as u64;
        line.trim_end().to_owned()
    }

    fn cmd(&mut self, command: &str) -> String {
        write!(self.reader.get_mut(), "{command}\r\n").unwrap();
        self.line()
    }

    /// Reads a multi-line body through its terminating dot.
    fn body(&mut self) {
        while self.line() != "." {}
    }

    /// QUIT, then everything up to the server's close.
    fn quit(mut self) -> u64 {
        let reply = self.cmd("QUIT");
        assert!(reply.starts_with("+OK"), "{reply}");
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).unwrap();
        self.received + rest.len() as u64
    }
}

// ---- the Prometheus text exposition ----

/// Every sample of an exposition: (name, labels) → value.
type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

fn parse(text: &str) -> Samples {
    let mut samples = Samples::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split("\",")
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap();
                (key.to_owned(), value.trim_matches('"').to_owned())
            })
            .collect();
        samples.insert((name.to_owned(), labels), value.parse().unwrap());
    }
    samples
}

/// The value of one series; a series that does not exist reads 0.
fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    let labels = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    samples
        .get(&(name.to_owned(), labels))
        .copied()
        .unwrap_or(0.0)
}

fn scrape(server: &Server) -> String {
    let (status, body) = http_get(server.admin, "/metrics").unwrap();
    assert_eq!(status, 200, "/metrics: {body}");
    body
}

/// `promtool check metrics` on `exposition`: no lint problem, exit 0.
fn promtool_check(role: &str, exposition: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => panic!(
            "promtool is needed to lint the metrics ({e}); install the Debian package \
             `prometheus` (apt-get install prometheus), as tests/run.sh does"
        ),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics on the {role} exposition: {said}\n{exposition}"
    );
}

/// Scrapes until `done` holds (gauges settle just after a client sees its last reply).
fn scrape_until(server: &Server, done: impl Fn(&Samples) -> bool) -> (String, Samples) {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = scrape(server);
        let samples = parse(&text);
        if done(&samples) || Instant::now() > deadline {
            return (text, samples);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The log lines of `server` that are JSON objects with this `message`.
fn json_lines(server: &Server, message: &str) -> Vec<serde_json::Value> {
    server
        .log()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["message"] == message)
        .collect()
}

#[test]
fn each_role_counts_exactly_what_its_clients_did_and_promtool_accepts_it() {
    let d = deploy(&[("LOG__FORMAT", "json")]);
    let first = message("first", "the first message\r\n");
    let second = message("second", "the second message\r\n");

    // One LMTP session delivers two messages, and names one unknown recipient.
    let mut lmtp = Lmtp::connect(d.lmtp.lmtp);
    for body in [&first, &second] {
        let replies = lmtp.send(&["alice@acme.example"], body);
        assert!(replies[0].starts_with("250"), "{replies:?}");
    }
    let unknown = lmtp.cmd("MAIL FROM:<sender@example.net>");
    assert!(unknown.starts_with("250"), "{unknown}");
    let unknown = lmtp.cmd("RCPT TO:<nobody@acme.example>");
    assert!(unknown.starts_with("550"), "{unknown}");
    lmtp.cmd("RSET");
    lmtp.quit();

    // A session with a wrong password, then a login, STAT, RETR, DELE and QUIT.
    let mut pop = Counted::connect(d.pop3.pop3);
    assert!(pop.cmd("USER alice@acme.example").starts_with("+OK"));
    let wrong = pop.cmd("PASS not the secret");
    assert!(wrong.starts_with("-ERR [AUTH]"), "{wrong}");
    assert!(pop.cmd("USER alice@acme.example").starts_with("+OK"));
    assert!(pop.cmd("PASS alice's secret").starts_with("+OK"));
    assert!(pop.cmd("STAT").starts_with("+OK 2 "));
    assert!(pop.cmd("RETR 1").starts_with("+OK"));
    pop.body();
    assert!(pop.cmd("DELE 2").starts_with("+OK"));
    let session_bytes = pop.quit();
    // A session that only fails to log in.
    let mut pop = Counted::connect(d.pop3.pop3);
    assert!(pop.cmd("USER alice@acme.example").starts_with("+OK"));
    assert!(pop.cmd("PASS wrong again").starts_with("-ERR [AUTH]"));
    let failed_bytes = pop.quit();

    // POP3: sessions, logins, commands, bytes, lock and store calls, gRPC calls.
    let (text, m) = scrape_until(&d.pop3, |m| {
        value(m, "cloudpop_pop3_sessions_total", &[("outcome", "closed")]) == 2.0
            && value(
                m,
                "cloudpop_pop3_connections_active",
                &[("listener", "plain")],
            ) == 0.0
            && value(m, "cloudpop_pop3_sessions_active", &[("listener", "plain")]) == 0.0
    });
    promtool_check("pop3", &text);
    let expect = |name: &str, labels: &[(&str, &str)], want: f64| {
        let got = value(&m, name, labels);
        assert_eq!(got, want, "{name}{labels:?}\n{text}");
    };
    expect(
        "cloudpop_pop3_connections_total",
        &[("listener", "plain")],
        2.0,
    );
    expect(
        "cloudpop_pop3_connections_active",
        &[("listener", "plain")],
        0.0,
    );
    expect(
        "cloudpop_pop3_sessions_active",
        &[("listener", "plain")],
        0.0,
    );
    expect(
        "cloudpop_pop3_sessions_total",
        &[("outcome", "closed")],
        2.0,
    );
    expect(
        "cloudpop_pop3_sessions_total",
        &[("outcome", "dropped")],
        0.0,
    );
    expect("cloudpop_pop3_session_duration_seconds_count", &[], 2.0);
    let attempts = "cloudpop_pop3_auth_attempts_total";
    expect(
        attempts,
        &[("mechanism", "PASS"), ("outcome", "success")],
        1.0,
    );
    expect(
        attempts,
        &[("mechanism", "PASS"), ("outcome", "bad_credentials")],
        2.0,
    );
    for (command, outcome, count) in [
        ("USER", "ok", 3.0),
        ("PASS", "err", 2.0),
        ("PASS", "ok", 1.0),
        ("STAT", "ok", 1.0),
        ("RETR", "ok", 1.0),
        ("DELE", "ok", 1.0),
        ("QUIT", "ok", 2.0),
        ("LIST", "ok", 0.0),
    ] {
        let labels = [("command", command), ("outcome", outcome)];
        expect("cloudpop_pop3_commands_total", &labels, count);
    }
    expect(
        "cloudpop_pop3_command_duration_seconds_count",
        &[("command", "RETR")],
        1.0,
    );
    expect(
        "cloudpop_pop3_sent_bytes_total",
        &[("listener", "plain")],
        (session_bytes + failed_bytes) as f64,
    );
    expect("cloudpop_pop3_messages_retrieved_total", &[], 1.0);
    expect("cloudpop_pop3_messages_deleted_total", &[], 1.0);
    expect(
        "cloudpop_lock_acquisitions_total",
        &[("outcome", "acquired")],
        1.0,
    );
    expect(
        "cloudpop_lock_acquisitions_total",
        &[("outcome", "contended")],
        0.0,
    );
    let store = "cloudpop_store_request_duration_seconds_count";
    for (operation, count) in [("list", 1.0), ("open", 1.0), ("delete", 1.0), ("put", 0.0)] {
        let labels = [
            ("backend", "s3"),
            ("operation", operation),
            ("outcome", "ok"),
        ];
        expect(store, &labels, count);
    }
    let lock = "cloudpop_lock_request_duration_seconds_count";
    for operation in ["acquire", "check", "release"] {
        let labels = [
            ("backend", "redis"),
            ("operation", operation),
            ("outcome", "ok"),
        ];
        expect(lock, &labels, 1.0);
    }
    expect(
        "cloudpop_grpc_client_request_duration_seconds_count",
        &[("method", "Authenticate"), ("outcome", "ok")],
        3.0,
    );
    expect(
        "cloudpop_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );

    // LMTP: the session, the recipients, the deliveries, the stored messages.
    let (text, m) = scrape_until(&d.lmtp, |m| {
        value(m, "cloudpop_lmtp_sessions_total", &[("outcome", "quit")]) == 1.0
    });
    promtool_check("lmtp", &text);
    let expect = |name: &str, labels: &[(&str, &str)], want: f64| {
        let got = value(&m, name, labels);
        assert_eq!(got, want, "{name}{labels:?}\n{text}");
    };
    expect("cloudpop_lmtp_sessions_total", &[("outcome", "quit")], 1.0);
    expect("cloudpop_lmtp_connections_active", &[], 0.0);
    expect(
        "cloudpop_lmtp_recipients_total",
        &[("outcome", "accepted")],
        2.0,
    );
    expect(
        "cloudpop_lmtp_recipients_total",
        &[("outcome", "unknown")],
        1.0,
    );
    expect(
        "cloudpop_lmtp_deliveries_total",
        &[("outcome", "delivered")],
        2.0,
    );
    expect(
        "cloudpop_lmtp_deliveries_total",
        &[("outcome", "storage_failed")],
        0.0,
    );
    expect(
        "cloudpop_lmtp_received_bytes_total",
        &[],
        (first.len() + second.len()) as f64,
    );
    expect(
        "cloudpop_store_request_duration_seconds_count",
        &[("backend", "s3"), ("operation", "put"), ("outcome", "ok")],
        2.0,
    );
    expect(
        "cloudpop_grpc_client_request_duration_seconds_count",
        &[("method", "LookupRecipient"), ("outcome", "ok")],
        3.0,
    );

    // Auth: its decisions and its gRPC calls.
    let text = scrape(&d.auth);
    promtool_check("auth", &text);
    let m = parse(&text);
    let expect = |name: &str, labels: &[(&str, &str)], want: f64| {
        let got = value(&m, name, labels);
        assert_eq!(got, want, "{name}{labels:?}\n{text}");
    };
    let attempts = "cloudpop_auth_attempts_total";
    expect(
        attempts,
        &[("mechanism", "PASS"), ("outcome", "success")],
        1.0,
    );
    expect(
        attempts,
        &[("mechanism", "PASS"), ("outcome", "bad_credentials")],
        2.0,
    );
    let served = "cloudpop_grpc_server_request_duration_seconds_count";
    expect(
        served,
        &[("method", "Authenticate"), ("outcome", "ok")],
        3.0,
    );
    expect(
        served,
        &[("method", "LookupRecipient"), ("outcome", "ok")],
        3.0,
    );

    // Logs: exactly one line per session end, and one per delivery, saying the same.
    let ended = json_lines(&d.pop3, "pop3 session ended");
    assert_eq!(ended.len(), 2, "{ended:?}");
    let full = ended
        .iter()
        .find(|line| line["retrieved"] == 1)
        .expect("the session with RETR");
    assert_eq!(full["outcome"], "closed");
    assert_eq!(full["login"], "alice@acme.example");
    assert_eq!(full["commands"], 8);
    assert_eq!(full["deleted"], 1);
    assert_eq!(full["auth_failures"], 1);
    assert_eq!(full["bytes_sent"], session_bytes);
    assert!(full["duration_ms"].is_u64(), "{full}");
    let delivered = json_lines(&d.lmtp, "delivered");
    assert_eq!(delivered.len(), 2, "{delivered:?}");
    assert!(delivered.iter().all(|l| l["outcome"] == "delivered"));
    let lmtp_ended = json_lines(&d.lmtp, "LMTP session ended");
    assert_eq!(lmtp_ended.len(), 1, "{lmtp_ended:?}");
    assert_eq!(lmtp_ended[0]["messages"], 2);
    assert_eq!(lmtp_ended[0]["delivered"], 2);
    assert_eq!(
        lmtp_ended[0]["bytes_received"],
        (first.len() + second.len()) as u64
    );
    // Never a secret in a log line.
    for server in [&d.pop3, &d.auth, &d.lmtp] {
        assert!(!server.log().contains("alice's secret"));
        assert!(!server.log().contains("not the secret"));
    }
}

// ---- an OTLP collector ----

/// One received span, flattened.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    resource: BTreeMap<String, String>,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent: Vec<u8>,
    kind: i32,
    attributes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let resource: BTreeMap<String, String> = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .map(|kv| (kv.key.clone(), string(kv.value.as_ref())))
                .collect();
            let service = resource.get("service.name").cloned().unwrap_or_default();
            for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                spans.push(Received {
                    service: service.clone(),
                    resource: resource.clone(),
                    name: span.name,
                    trace_id: span.trace_id,
                    span_id: span.span_id,
                    parent: span.parent_span_id,
                    kind: span.kind,
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), string(kv.value.as_ref())))
                        .collect(),
                });
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn string(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// Serves the collector on a free loopback port from a runtime of its own.
fn start_collector() -> (Collector, SocketAddr, tokio::runtime::Runtime) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let collector = Collector::default();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let service = TraceServiceServer::new(collector.clone());
    runtime.spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    (collector, addr, runtime)
}

#[test]
fn a_session_trace_has_its_commands_its_storage_calls_and_the_auth_service() {
    let (collector, addr, _runtime) = start_collector();
    let endpoint = format!("http://{addr}");
    let d = deploy(&[
        ("TELEMETRY__OTLP_ENDPOINT", &endpoint),
        ("TELEMETRY__EXPORT_INTERVAL", "100ms"),
        (
            "TELEMETRY__RESOURCE_ATTRIBUTES",
            "{ \"deployment.environment\" = \"e2e\" }",
        ),
    ]);
    d.lmtp
        .deliver_ok("alice@acme.example", &message("traced", "hello\r\n"));
    let mut pop = d.pop3.pop3();
    pop.login_ok("alice@acme.example", "alice's secret");
    assert!(pop.cmd("STAT").starts_with("+OK 1 "));
    pop.retr(1);
    assert!(pop.cmd("DELE 1").starts_with("+OK"));
    assert!(pop.quit().starts_with("+OK"));

    // Wait for the session span (it ends last) and the auth service's span of its login.
    let deadline = Instant::now() + WAIT;
    let (session, spans) = loop {
        let spans = collector.spans.lock().unwrap().clone();
        let session = spans
            .iter()
            .find(|s| s.service == "cloudpop-pop3" && s.name == "pop3_session")
            .cloned();
        if let Some(session) = session {
            let auth_joined = spans
                .iter()
                .any(|s| s.service == "cloudpop-auth" && s.trace_id == session.trace_id);
            if auth_joined {
                break (session, spans);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no session span with the auth service's span; received: {:#?}",
            spans
                .iter()
                .map(|s| (&s.service, &s.name))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let trace: Vec<&Received> = spans
        .iter()
        .filter(|s| s.trace_id == session.trace_id)
        .collect();
    let names = |spans: &[&Received]| spans.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
    assert!(session.parent.is_empty(), "the session span is the root");
    assert_eq!(session.kind, SpanKind::Server as i32);
    assert_eq!(session.attributes["listener"], "plain");

    // Each command is a child of the session span.
    let commands: Vec<&Received> = trace
        .iter()
        .copied()
        .filter(|s| s.parent == session.span_id)
        .collect();
    for command in ["USER", "PASS", "STAT", "RETR", "DELE", "QUIT"] {
        assert!(
            commands.iter().any(|s| s.name == command),
            "no {command} child of the session: {:?}",
            names(&commands)
        );
    }
    let child_of = |parent: &str, name: &str| -> &Received {
        let parent = commands.iter().find(|s| s.name == parent).unwrap();
        trace
            .iter()
            .copied()
            .find(|s| s.name == name && s.parent == parent.span_id)
            .unwrap_or_else(|| panic!("no {name} under {parent:?}; trace: {:?}", names(&trace)))
    };
    // The login's calls: auth (client side), the lock, the listing; then the reads and QUIT.
    let auth_call = child_of("PASS", "cloudpop.auth.v1.AuthService/Authenticate");
    assert_eq!(auth_call.kind, SpanKind::Client as i32);
    child_of("PASS", "lock.acquire");
    let list = child_of("PASS", "store.list");
    assert_eq!(list.attributes["backend"], "s3");
    child_of("RETR", "store.open");
    // UPDATE: the fencing check, the delete of what DELE marked, the release.
    child_of("QUIT", "lock.check");
    child_of("QUIT", "store.delete");
    child_of("QUIT", "lock.release");

    // The auth service's span continues the trace, under the front-end's call.
    let served = trace.iter().find(|s| s.service == "cloudpop-auth").unwrap();
    assert_eq!(served.name, "cloudpop.auth.v1.AuthService/Authenticate");
    assert_eq!(served.kind, SpanKind::Server as i32);
    assert_eq!(served.parent, auth_call.span_id);
    assert_eq!(served.attributes["outcome"], "success");
    assert_eq!(served.attributes["mechanism"], "PASS");

    // Delivery has its own trace: the LMTP session, its RCPT lookup and the store's put.
    let delivery = spans
        .iter()
        .find(|s| s.service == "cloudpop-lmtp" && s.name == "store.put")
        .expect("the delivery's store.put span");
    assert!(
        spans.iter().any(|s| s.service == "cloudpop-auth"
            && s.name == "cloudpop.auth.v1.AuthService/LookupRecipient"
            && s.trace_id == delivery.trace_id),
        "the recipient lookup joins the delivery's trace"
    );

    // Resource attributes from the configuration, and no secret anywhere.
    assert_eq!(session.resource["deployment.environment"], "e2e");
    for span in &spans {
        assert!(
            !span.attributes.values().any(|v| v.contains("secret")),
            "{span:?}"
        );
    }
}

#[test]
fn traces_to_a_collector_that_is_down_cost_nothing() {
    // Nothing listens on the endpoint: export fails in the background, sessions don't.
    let port = backends::free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let server = Server::builder()
        .user("bob@example.com", "bob's secret")
        .option("TELEMETRY__OTLP_ENDPOINT", &endpoint)
        .option("TELEMETRY__EXPORT_INTERVAL", "10ms")
        .option("TELEMETRY__EXPORT_TIMEOUT", "200ms")
        .option("TELEMETRY__MAX_QUEUE_SIZE", "4")
        .start();
    server.deliver_ok("bob@example.com", &message("one", "body\r\n"));
    let started = Instant::now();
    for _ in 0..10 {
        let mut pop = server.pop3();
        pop.login_ok("bob@example.com", "bob's secret");
        assert!(pop.cmd("STAT").starts_with("+OK 1 "));
        assert!(pop.quit().starts_with("+OK"));
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "sessions were slowed down: {:?}",
        started.elapsed()
    );
    let (status, _) = http_get(server.admin, "/readyz").unwrap();
    assert_eq!(status, 200, "a collector outage is not a readiness problem");
}
