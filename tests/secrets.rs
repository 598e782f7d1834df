//! No secret reaches a log: a full session with known secrets (passwords right and wrong,
//! APOP and CRAM-MD5 secrets, SASL payloads, a message body), then a search of every log line
//! the server wrote at trace level — events and the fields of the spans they ran in — and of
//! everything the admin CLI printed.
//!
//! The search looks for each secret as text, in base64 at each of the three alignments (so a
//! logged base64 blob that merely contains the secret is found too), in hex, and as a decimal
//! byte list (`Debug` of a `Vec<u8>`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod support;

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{KeyInit, Mac};
use md5::{Digest, Md5};
use support::{Output, Pop3, Server, WAIT, message};

const LOGIN: &str = "carol@example.com";
const INITIAL_PASSWORD: &str = "Initial-Secret-Passw0rd-JKL";
const PASSWORD: &str = "Sup3r-Secret-Passw0rd-XYZ";
const WRONG_PASSWORD: &str = "Wr0ng-Guess-Passw0rd-QRS";
const APOP_SECRET: &str = "Ap0p-Shared-Secret-LMN";
const CRAM_SECRET: &str = "Cr4m-Shared-Secret-UVW";
const BODY_MARKER: &str = "BODY-MARKER-7f3a";

/// Every secret this test hands to the server or the CLI.
const SECRETS: [&str; 6] = [
    INITIAL_PASSWORD,
    PASSWORD,
    WRONG_PASSWORD,
    APOP_SECRET,
    CRAM_SECRET,
    BODY_MARKER,
];

fn b64(data: impl AsRef<[u8]>) -> String {
    B64.encode(data)
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SASL PLAIN payload (RFC 4616): empty authzid, login, password.
fn plain_payload(password: &str) -> String {
    format!("\0{LOGIN}\0{password}")
}

/// The forms in which `secret` would show up if it were logged, with a label for each.
fn forms(secret: &str) -> Vec<(String, String)> {
    let bytes = secret.as_bytes();
    let mut forms = vec![
        ("text".to_owned(), secret.to_owned()),
        ("hex".to_owned(), hex(bytes)),
        ("HEX".to_owned(), hex(bytes).to_uppercase()),
        (
            "byte list".to_owned(),
            format!("{bytes:?}").trim_matches(['[', ']']).to_owned(),
        ),
    ];
    // Base64 of any data containing the secret at offset 0, 1 or 2 (mod 3) contains the
    // middle of one of these encodings: drop the quantum mixed with what precedes the secret
    // and the last one, which depends on what follows it.
    for shift in 0..3 {
        let mut data = vec![0u8; shift];
        data.extend_from_slice(bytes);
        let encoded = b64(&data);
        let start = if shift == 0 { 0 } else { 4 };
        let core = &encoded[start..encoded.len() - 4];
        forms.push((format!("base64 at offset {shift}"), core.to_owned()));
    }
    forms
}

/// What must not appear: every form of every secret, and the whole SASL payloads as sent.
fn needles() -> Vec<(String, String)> {
    let mut needles = Vec::new();
    for secret in SECRETS {
        for (form, needle) in forms(secret) {
            needles.push((format!("{secret} as {form}"), needle));
        }
    }
    for password in [PASSWORD, WRONG_PASSWORD] {
        let payload = plain_payload(password);
        needles.push((format!("PLAIN payload of {password}"), b64(&payload)));
        needles.push((
            format!("PLAIN payload of {password}, escaped"),
            payload.replace('\0', "\\0"),
        ));
        needles.push((
            format!("PLAIN payload of {password}, JSON-escaped"),
            payload.replace('\0', "\\u0000"),
        ));
        needles.push((format!("LOGIN response {password}"), b64(password)));
    }
    needles
}

/// The needles found in `text`, by label.
fn leaks(text: &str) -> Vec<String> {
    needles()
        .into_iter()
        .filter(|(_, needle)| text.contains(needle.as_str()))
        .map(|(label, _)| label)
        .collect()
}

fn assert_no_leak(what: &str, text: &str) {
    let found = leaks(text);
    assert!(found.is_empty(), "{what} leaks {found:?}:\n{text}");
}

/// Runs an admin command, asserts success, and checks what it printed.
fn admin(server: &Server, args: &[&str], stdin: &str) -> Output {
    let out = server.admin(args, stdin);
    out.assert_success();
    assert_no_leak(&format!("admin {args:?} stdout"), &out.stdout);
    assert_no_leak(&format!("admin {args:?} stderr"), &out.stderr);
    out
}

fn md5_hex(data: &str) -> String {
    hex(&Md5::digest(data.as_bytes()))
}

fn hmac_md5_hex(key: &str, data: &str) -> String {
    let mut mac = <hmac::Hmac<Md5> as KeyInit>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(data.as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// The APOP timestamp of a greeting (RFC 1939 §7), angle brackets included.
fn apop_timestamp(pop: &Pop3) -> String {
    let start = pop.greeting.find('<').expect("APOP timestamp in greeting");
    let end = pop.greeting.rfind('>').expect("end of APOP timestamp");
    pop.greeting[start..=end].to_owned()
}

/// Asserts a reply is an error and does not echo a secret back to the client either.
fn assert_err(reply: &str, what: &str) {
    assert!(reply.starts_with("-ERR"), "{what}: {reply}");
    assert_no_leak(&format!("reply to {what}"), reply);
}

fn assert_ok(reply: &str, what: &str) {
    assert!(reply.starts_with("+OK"), "{what}: {reply}");
}

/// Waits until the users file with every secret is loaded: APOP and CRAM-MD5 are offered
/// and the new password works. Returns the number of sessions it opened.
fn wait_for_secrets(server: &Server) -> usize {
    let deadline = Instant::now() + WAIT;
    for sessions in 1.. {
        let mut pop = server.pop3();
        let capa = pop.cmd("AUTH");
        let mechanisms = if capa.starts_with("+OK") {
            String::from_utf8_lossy(&pop.body()).into_owned()
        } else {
            String::new()
        };
        if pop.greeting.contains('<')
            && mechanisms.contains("CRAM-MD5")
            && pop.login(LOGIN, PASSWORD).starts_with("+OK")
        {
            pop.quit();
            return sessions;
        }
        assert!(Instant::now() < deadline, "secrets never took effect");
        std::thread::sleep(Duration::from_millis(50));
    }
    unreachable!()
}

/// USER/PASS wrong then right; RETR and TOP of the message with the marker.
fn user_pass_and_retr(server: &Server) {
    let mut pop = server.pop3();
    assert_err(&pop.login(LOGIN, WRONG_PASSWORD), "wrong PASS");
    assert_ok(&pop.login(LOGIN, PASSWORD), "PASS");
    let body = String::from_utf8(pop.retr(1)).unwrap();
    assert!(body.contains(BODY_MARKER), "{body}");
    let (_, top) = pop.multi("TOP 1 5");
    assert!(String::from_utf8(top).unwrap().contains(BODY_MARKER));
    assert_ok(&pop.quit(), "QUIT");
}

/// APOP right and wrong (RFC 1939 §7).
fn apop(server: &Server) {
    let mut pop = server.pop3();
    let timestamp = apop_timestamp(&pop);
    let wrong = md5_hex(&format!("{timestamp}{WRONG_PASSWORD}"));
    assert_err(&pop.cmd(&format!("APOP {LOGIN} {wrong}")), "wrong APOP");
    let right = md5_hex(&format!("{timestamp}{APOP_SECRET}"));
    assert_ok(&pop.cmd(&format!("APOP {LOGIN} {right}")), "APOP");
    assert_ok(&pop.quit(), "QUIT");
}

/// AUTH PLAIN (RFC 4616): wrong, then right with an initial response; right after an empty
/// challenge.
fn auth_plain(server: &Server) {
    let mut pop = server.pop3();
    let wrong = b64(plain_payload(WRONG_PASSWORD));
    assert_err(&pop.cmd(&format!("AUTH PLAIN {wrong}")), "wrong PLAIN");
    let right = b64(plain_payload(PASSWORD));
    assert_ok(&pop.cmd(&format!("AUTH PLAIN {right}")), "PLAIN");
    assert_ok(&pop.quit(), "QUIT");

    let mut pop = server.pop3();
    assert_eq!(pop.cmd("AUTH PLAIN"), "+ ");
    assert_ok(&pop.cmd(&right), "PLAIN after a challenge");
    assert_ok(&pop.quit(), "QUIT");
}

/// AUTH LOGIN: user name and password, each base64 on its own line.
fn auth_login(server: &Server) {
    let mut pop = server.pop3();
    assert!(pop.cmd("AUTH LOGIN").starts_with("+ "));
    assert!(pop.cmd(&b64(LOGIN)).starts_with("+ "));
    assert_ok(&pop.cmd(&b64(PASSWORD)), "LOGIN");
    assert_ok(&pop.quit(), "QUIT");
}

/// AUTH CRAM-MD5 (RFC 2195): wrong digest, then the right one.
fn auth_cram(server: &Server) {
    let mut pop = server.pop3();
    for (secret, ok) in [(WRONG_PASSWORD, false), (CRAM_SECRET, true)] {
        let challenge = pop.cmd("AUTH CRAM-MD5");
        let challenge = challenge.strip_prefix("+ ").expect("CRAM-MD5 challenge");
        let challenge = String::from_utf8(B64.decode(challenge).unwrap()).unwrap();
        let response = b64(format!("{LOGIN} {}", hmac_md5_hex(secret, &challenge)));
        let reply = pop.cmd(&response);
        if ok {
            assert_ok(&reply, "CRAM-MD5");
        } else {
            assert_err(&reply, "wrong CRAM-MD5");
        }
    }
    assert_ok(&pop.quit(), "QUIT");
}

/// Mistakes that put the password where it does not belong: SASL responses that are not
/// base64, the password typed as a command, and a PASS line over the length limit.
fn misplaced_password(server: &Server) {
    let mut pop = server.pop3();
    assert_eq!(pop.cmd("AUTH PLAIN"), "+ ");
    assert_err(
        &pop.cmd(&format!("!!{PASSWORD}!!")),
        "PLAIN response not base64",
    );
    assert_err(
        &pop.cmd(&format!("AUTH PLAIN {PASSWORD}")),
        "PLAIN initial response not base64",
    );
    assert_ok(&pop.quit(), "QUIT");

    let mut pop = server.pop3();
    assert!(pop.cmd("AUTH LOGIN").starts_with("+ "));
    assert!(pop.cmd(&b64(LOGIN)).starts_with("+ "));
    assert_err(&pop.cmd(PASSWORD), "LOGIN password not base64");
    assert_err(&pop.cmd(PASSWORD), "the password as a command");
    assert_ok(&pop.cmd(&format!("USER {LOGIN}")), "USER");
    let long = format!("PASS {PASSWORD}{}", "x".repeat(1100));
    assert_err(&pop.cmd(&long), "over-long PASS");
    assert_ok(&pop.quit(), "QUIT");
}

#[test]
fn the_search_finds_a_secret_in_any_of_its_forms() {
    // A log that did contain them, embedded the way a careless log line would.
    for (i, secret) in SECRETS.iter().enumerate() {
        let prefix = "x".repeat(i % 3);
        let encoded = b64(format!("{prefix}{secret}-and-more"));
        let samples = [
            format!("{{\"password\":\"{secret}\"}}"),
            format!("initial response {encoded} rejected"),
            format!("bytes: {:?}", format!("ab{secret}").as_bytes()),
            format!("hex {}", hex(secret.as_bytes())),
        ];
        for sample in samples {
            assert!(!leaks(&sample).is_empty(), "{secret} not found in {sample}");
        }
    }
    assert!(!leaks(&b64(plain_payload(PASSWORD))).is_empty());
    // And none of the needles is so short or common that it matches an innocent log.
    assert!(leaks("pop3 session ended login=carol@example.com outcome=closed").is_empty());
    assert!(needles().iter().all(|(_, needle)| needle.len() >= 16));
}

#[test]
fn a_full_session_leaves_no_secret_in_the_logs() {
    let mut server = Server::builder()
        .option("LOG__LEVEL", "trace")
        .option("LOG__FORMAT", "json")
        .option("POP3__OFFER_CLEARTEXT_WITHOUT_TLS", "true")
        // Every mechanism, so that each one is exercised and its secret watched for.
        .option(
            "POP3__SASL_MECHANISMS",
            r#"["PLAIN", "LOGIN", "CRAM-MD5", "OAUTHBEARER", "XOAUTH2"]"#,
        )
        .start();

    // The admin CLI reads every secret from standard input; it inherits trace logging too.
    admin(&server, &["user", "add", LOGIN], INITIAL_PASSWORD);
    admin(&server, &["user", "passwd", LOGIN], PASSWORD);
    admin(&server, &["user", "apop", LOGIN], APOP_SECRET);
    admin(&server, &["user", "cram", LOGIN], CRAM_SECRET);
    admin(
        &server,
        &["tenant", "set", "default", "--cleartext-allowed", "true"],
        "",
    );
    let list = admin(&server, &["user", "list"], "");
    assert!(list.stdout.contains(LOGIN), "{}", list.stdout);
    let waiting_sessions = wait_for_secrets(&server);

    server.deliver_ok(
        LOGIN,
        &message("secret body", &format!("line one\r\n{BODY_MARKER}\r\n")),
    );
    user_pass_and_retr(&server);
    apop(&server);
    auth_plain(&server);
    auth_login(&server);
    auth_cram(&server);
    misplaced_password(&server);
    // Eight sessions above, after those of wait_for_secrets.
    server.log_with("pop3 session ended", waiting_sessions + 8);
    let status = server.terminate();
    assert!(status.success(), "exit status {status}");

    let log = server.log();
    // The log is the real thing: debug events (the most detailed the product emits; it has
    // no trace-level call sites) for every command, inside session spans, session ends, the
    // delivery. A search of an empty log would prove nothing.
    assert!(log.lines().count() > 50, "too little logged:\n{log}");
    assert!(
        log.contains("\"level\":\"DEBUG\""),
        "no debug events:\n{log}"
    );
    assert!(
        log.matches("\"message\":\"pop3 command\"").count() >= 25,
        "not every command was logged:\n{log}"
    );
    assert!(
        log.contains("\"message\":\"delivered\""),
        "no delivery:\n{log}"
    );
    assert!(
        log.contains("\"name\":\"pop3_session\""),
        "no session spans:\n{log}"
    );
    assert!(log.contains("pop3 command"), "no command events:\n{log}");
    // The login is logged; the same search finds it, so it would find a secret logged alike.
    assert!(
        log.contains(&format!("\"login\":\"{LOGIN}\"")),
        "no login logged:\n{log}"
    );
    let login_forms = forms(LOGIN);
    assert!(
        log.lines().any(|line| login_forms
            .iter()
            .any(|(_, form)| line.contains(form.as_str()))),
        "the search does not find the login"
    );
    for line in log.lines() {
        assert_no_leak("server log line", line);
    }
}
