//! Real LMTP clients: Python's `smtplib.LMTP` and `swaks`.

mod support;

use std::process::Output;
use std::time::Duration;

use support::{TestServer, split_trace};
use tokio::process::Command;

const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

async fn run(command: &mut Command) -> Output {
    let running = command.kill_on_drop(true).output();
    let output = match tokio::time::timeout(CLIENT_TIMEOUT, running).await {
        Ok(Ok(output)) => output,
        Ok(Err(error)) => panic!("client could not be started: {error}"),
        Err(_) => panic!("client timed out"),
    };
    assert!(
        output.status.success(),
        "client failed: {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

const PYTHON_CLIENT: &str = r#"
import json, smtplib, sys
msg = "Subject: from python\nFrom: py@ext.example\n\nHello from smtplib.\n.dotted line\nlast\n"
with smtplib.LMTP("127.0.0.1", int(sys.argv[1]), local_hostname="client.example") as lmtp:
    refused = lmtp.sendmail("py@ext.example", ["alice@example.com", "nobody@example.com"], msg)
print(json.dumps({rcpt: [code, text.decode()] for rcpt, (code, text) in refused.items()}))
"#;

#[tokio::test]
async fn python_smtplib_lmtp_delivers() {
    let server = TestServer::start().await;
    let output = run(Command::new("python3")
        .arg("-c")
        .arg(PYTHON_CLIENT)
        .arg(server.addr.port().to_string()))
    .await;
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        r#"{"nobody@example.com": [550, "5.1.1 <nobody@example.com>: no such user"]}"#
    );
    let stored = server.messages("alice").await;
    assert_eq!(stored.len(), 1);
    let (_, rcpt, body) = split_trace(&stored[0].1, "py@ext.example");
    assert_eq!(rcpt.as_deref(), Some("alice@example.com"));
    assert_eq!(
        body,
        b"Subject: from python\r\nFrom: py@ext.example\r\n\r\nHello from smtplib.\r\n.dotted line\r\nlast\r\n"
    );
}

#[tokio::test]
async fn swaks_lmtp_delivers_to_several_recipients() {
    assert!(
        std::process::Command::new("swaks")
            .arg("--version")
            .output()
            .is_ok_and(|out| out.status.success()),
        "swaks is not installed; `bash tests/run.sh` (the README's test command) installs it"
    );
    let server = TestServer::start().await;
    let output = run(Command::new("swaks")
        .args(["--protocol", "LMTP", "--server", "127.0.0.1"])
        .args(["--port", &server.addr.port().to_string()])
        .args(["--helo", "client.example", "--from", "swaks@ext.example"])
        .args(["--to", "bob@example.com,carol@example.com"])
        .args([
            "--header",
            "Subject: from swaks",
            "--body",
            "Hello from swaks.\n.dot",
        ])
        .args(["--timeout", "30"]))
    .await;
    let transcript = String::from_utf8_lossy(&output.stdout);
    assert!(
        !transcript.contains("<** "),
        "swaks saw an error:\n{transcript}"
    );
    assert!(
        transcript.contains("<bob@example.com> delivered as"),
        "{transcript}"
    );
    assert!(
        transcript.contains("<carol@example.com> delivered as"),
        "{transcript}"
    );
    for mailbox in ["bob", "carol"] {
        let stored = server.messages(mailbox).await;
        assert_eq!(stored.len(), 1);
        let (_, rcpt, body) = split_trace(&stored[0].1, "swaks@ext.example");
        assert_eq!(rcpt, None);
        let body = String::from_utf8(body).unwrap();
        assert!(body.contains("Subject: from swaks\r\n"), "{body}");
        assert!(
            body.contains("\r\n\r\nHello from swaks.\r\n.dot\r\n"),
            "{body:?}"
        );
    }
}
