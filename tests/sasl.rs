//! SASL (RFC 5034 AUTH) end to end against the real binary: PLAIN (RFC 4616), LOGIN,
//! CRAM-MD5 (RFC 2195), and bearer tokens with OAUTHBEARER (RFC 7628) and XOAUTH2, checked
//! against a tenant's `[tenants.jwt]` trust with an ES256 key generated at test time.
//!
//! Mechanisms that send a password or token run over POP3S; CRAM-MD5, which sends neither,
//! runs on the plain port. Users files are written with `cloudpop admin` before the server
//! starts (the `[tenants.jwt]` table, which the CLI cannot set, is added to that file).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod support;
#[path = "tls_clients/wire.rs"]
mod wire;

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::Server;
use wire::{Client, TlsStream, dev_config, pop3s};

const LOGIN: &str = "alice@example.com";
const PASSWORD: &str = "correct horse battery";
const CRAM_LOGIN: &str = "tim@example.com";
const CRAM_SECRET: &str = "tanstaaftanstaaf";
/// A user of tenant `idp`, which trusts bearer tokens from `ISSUER`.
const TOKEN_LOGIN: &str = "carol@idp.example";
const ISSUER: &str = "https://idp.test/";
const AUDIENCE: &str = "pop3";
const KID: &str = "idp-1";

fn b64(bytes: impl AsRef<[u8]>) -> String {
    STANDARD.encode(bytes)
}

fn unb64(text: &str) -> Vec<u8> {
    STANDARD
        .decode(text)
        .unwrap_or_else(|e| panic!("{text:?} is not base64: {e}"))
}

/// Starts a server on a users file made by `commands` (and then changed by `edit`).
fn server_with(commands: &[(&[&str], &str)], edit: impl FnOnce(&Path)) -> (Server, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let users = wire::users_file(dir.path(), commands);
    edit(&users);
    let server = Server::builder()
        .cleartext(false)
        .option("USERS__FILE", &users.display().to_string())
        .start();
    (server, dir)
}

type TempDir = tempfile::TempDir;

/// `LOGIN` with a password; no CRAM-MD5 secret anywhere.
fn password_server() -> (Server, TempDir) {
    server_with(&[(&["user", "add", LOGIN], PASSWORD)], |_| {})
}

fn tls(server: &Server) -> Client<TlsStream> {
    pop3s(server.pop3s, &dev_config(server), "localhost")
}

fn plain_response(login: &str, password: &str) -> String {
    b64(format!("\0{login}\0{password}"))
}

fn assert_ok(reply: &str, what: &str) {
    assert!(reply.starts_with("+OK"), "{what}: {reply}");
}

/// Proves the session still works after a failed exchange: a good PLAIN login and STAT.
fn login_still_works(mut pop: Client<TlsStream>) {
    let reply = pop.cmd(&format!("AUTH PLAIN {}", plain_response(LOGIN, PASSWORD)));
    assert_ok(&reply, "AUTH PLAIN after a failed exchange");
    assert_ok(&pop.cmd("STAT"), "STAT");
    pop.quit();
}

// RFC 4616 §2 and RFC 5034 §4: PLAIN with and without an initial response.
#[test]
fn plain_with_and_without_initial_response() {
    let (server, _dir) = password_server();

    let mut pop = tls(&server);
    let reply = pop.cmd(&format!("AUTH PLAIN {}", plain_response(LOGIN, PASSWORD)));
    assert_ok(&reply, "PLAIN with initial response");
    assert_ok(&pop.cmd("STAT"), "STAT");
    pop.quit();

    // No initial response: an empty challenge (`+ `), then the response.
    let mut pop = tls(&server);
    assert_eq!(pop.cmd("AUTH PLAIN"), "+ ");
    let reply = pop.cmd(&plain_response(LOGIN, PASSWORD));
    assert_ok(&reply, "PLAIN after the empty challenge");
    pop.quit();

    // Authorization identity equal to the authentication identity is accepted.
    let mut pop = tls(&server);
    let response = b64(format!("{LOGIN}\0{LOGIN}\0{PASSWORD}"));
    assert_ok(
        &pop.cmd(&format!("AUTH PLAIN {response}")),
        "PLAIN with authzid",
    );
    pop.quit();

    // `=` is an empty initial response (RFC 5034 §4), not a missing one: it is the client's
    // whole PLAIN message, which is malformed, so the exchange fails without a challenge and
    // the session goes on to a proper response.
    let mut pop = tls(&server);
    let reply = pop.cmd("AUTH PLAIN =");
    assert!(reply.starts_with("-ERR"), "AUTH PLAIN =: {reply}");
    login_still_works(pop);
}

// The LOGIN mechanism: base64 `Username:` and `Password:` challenges.
#[test]
fn login_mechanism_asks_username_then_password() {
    let (server, _dir) = password_server();

    let mut pop = tls(&server);
    let challenge = pop.cmd("AUTH LOGIN");
    assert_eq!(challenge, format!("+ {}", b64("Username:")));
    let challenge = pop.cmd(&b64(LOGIN));
    assert_eq!(challenge, format!("+ {}", b64("Password:")));
    assert_ok(&pop.cmd(&b64(PASSWORD)), "LOGIN");
    pop.quit();

    // The user name as initial response skips the first challenge.
    let mut pop = tls(&server);
    let challenge = pop.cmd(&format!("AUTH LOGIN {}", b64(LOGIN)));
    assert_eq!(challenge, format!("+ {}", b64("Password:")));
    assert_ok(&pop.cmd(&b64(PASSWORD)), "LOGIN with initial response");
    pop.quit();
}

// RFC 3206 §4: bad credentials are [AUTH]; RFC 5034 §4: `*` cancels and a response that is
// not base64 fails the exchange, and in both cases the session goes on.
#[test]
fn failures_and_cancellation_leave_the_session_usable() {
    let (server, _dir) = password_server();

    let mut pop = tls(&server);
    let reply = pop.cmd(&format!("AUTH PLAIN {}", plain_response(LOGIN, "wrong")));
    assert!(reply.starts_with("-ERR [AUTH]"), "wrong password: {reply}");
    assert_eq!(pop.cmd("AUTH LOGIN"), format!("+ {}", b64("Username:")));
    assert_eq!(pop.cmd(&b64(LOGIN)), format!("+ {}", b64("Password:")));
    let reply = pop.cmd(&b64("wrong"));
    assert!(
        reply.starts_with("-ERR [AUTH]"),
        "LOGIN, wrong password: {reply}"
    );
    drop(pop);

    let mut pop = tls(&server);
    assert_eq!(pop.cmd("AUTH PLAIN"), "+ ");
    let reply = pop.cmd("*");
    assert!(reply.starts_with("-ERR"), "cancel: {reply}");
    assert_eq!(pop.cmd("AUTH LOGIN"), format!("+ {}", b64("Username:")));
    let reply = pop.cmd("*");
    assert!(reply.starts_with("-ERR"), "cancel LOGIN: {reply}");
    // After a cancel, the next line is a command again, not a SASL response.
    assert!(pop.cmd("NOOP").starts_with("-ERR"), "NOOP before login");
    login_still_works(pop);

    let mut pop = tls(&server);
    assert_eq!(pop.cmd("AUTH PLAIN"), "+ ");
    let reply = pop.cmd("not base64!");
    assert!(reply.starts_with("-ERR"), "bad base64 response: {reply}");
    let reply = pop.cmd("AUTH PLAIN ***");
    assert!(
        reply.starts_with("-ERR"),
        "bad base64 initial response: {reply}"
    );
    login_still_works(pop);
}

#[test]
fn auth_without_mechanism_lists_mechanisms_and_unknown_ones_are_refused() {
    let (server, _dir) = password_server();
    let mut pop = tls(&server);
    let listed = pop.lines("AUTH");
    assert_eq!(listed, ["PLAIN", "LOGIN", "OAUTHBEARER", "XOAUTH2"]);
    let capa = pop.lines("CAPA");
    assert!(
        capa.contains(&format!("SASL {}", listed.join(" "))),
        "AUTH lists what CAPA announces: {capa:?}"
    );
    for mechanism in ["FOO", "GSSAPI", "SCRAM-SHA-256", "CRAM-MD5"] {
        let reply = pop.cmd(&format!("AUTH {mechanism}"));
        assert!(reply.starts_with("-ERR"), "AUTH {mechanism}: {reply}");
    }
    login_still_works(pop);

    // Without TLS nothing that sends a password is listed.
    let mut pop = wire::plain(server.pop3);
    assert!(pop.lines("AUTH").is_empty());
}

fn hmac_md5_hex(key: &[u8], data: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = <hmac::Hmac<md5::Md5> as KeyInit>::new_from_slice(key).expect("any key length");
    mac.update(data);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn hmac_md5_matches_rfc_2195() {
    // The example of RFC 2195 §2, so that the CRAM-MD5 test computes digests correctly.
    assert_eq!(
        hmac_md5_hex(
            b"tanstaaftanstaaf",
            b"<1896.697170952@postoffice.reston.mci.net>"
        ),
        "b913a602c7eda7a495b4e6e7334d3890"
    );
}

/// AUTH CRAM-MD5 up to the challenge; returns it decoded.
fn cram_challenge(pop: &mut Client<std::net::TcpStream>) -> String {
    let reply = pop.cmd("AUTH CRAM-MD5");
    let challenge = reply
        .strip_prefix("+ ")
        .unwrap_or_else(|| panic!("AUTH CRAM-MD5: {reply}"));
    let challenge = String::from_utf8(unb64(challenge)).expect("UTF-8 challenge");
    // RFC 2195 §2: a msg-id, `<…@host>`.
    assert!(
        challenge.starts_with('<') && challenge.ends_with('>') && challenge.contains('@'),
        "{challenge}"
    );
    challenge
}

// RFC 2195: CRAM-MD5 sends no reusable secret, so once configured it is offered and
// accepted without TLS.
#[test]
fn cram_md5_on_the_plain_port() {
    let dir = tempfile::tempdir().unwrap();
    let users = wire::users_file(
        dir.path(),
        &[
            (&["user", "add", CRAM_LOGIN], PASSWORD),
            (&["user", "cram", CRAM_LOGIN], CRAM_SECRET),
        ],
    );
    let server = Server::builder()
        .cleartext(false)
        .option("USERS__FILE", &users.display().to_string())
        .option("POP3__SASL_MECHANISMS", r#"["PLAIN", "CRAM-MD5"]"#)
        .start();
    let mut pop = wire::plain(server.pop3);
    let capa = pop.lines("CAPA");
    assert!(capa.contains(&"SASL CRAM-MD5".to_owned()), "{capa:?}");
    assert_eq!(pop.lines("AUTH"), ["CRAM-MD5"]);

    // A wrong digest is [AUTH]; a fresh challenge each time.
    let first = cram_challenge(&mut pop);
    let digest = hmac_md5_hex(b"not the secret", first.as_bytes());
    let reply = pop.cmd(&b64(format!("{CRAM_LOGIN} {digest}")));
    assert!(reply.starts_with("-ERR [AUTH]"), "wrong digest: {reply}");

    let challenge = cram_challenge(&mut pop);
    assert_ne!(challenge, first, "challenges are not reused");
    let digest = hmac_md5_hex(CRAM_SECRET.as_bytes(), challenge.as_bytes());
    let reply = pop.cmd(&b64(format!("{CRAM_LOGIN} {digest}")));
    assert_ok(&reply, "CRAM-MD5");
    assert_ok(&pop.cmd("STAT"), "STAT");
    pop.quit();

    // A digest for an old challenge does not work again (no replay).
    let mut pop = wire::plain(server.pop3);
    let _ = cram_challenge(&mut pop);
    let reply = pop.cmd(&b64(format!("{CRAM_LOGIN} {digest}")));
    assert!(reply.starts_with("-ERR [AUTH]"), "replayed digest: {reply}");
}

/// The identity provider's ES256 key.
struct Idp {
    encoding: EncodingKey,
    /// What an attacker knows: the public key, as PEM and as SubjectPublicKeyInfo DER.
    public_pem: String,
    public_der: Vec<u8>,
    jwks: String,
}

fn idp() -> Idp {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key");
    let point = pair.public_key_raw();
    assert_eq!(point.len(), 65, "uncompressed P-256 point");
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": KID,
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..]),
    });
    Idp {
        encoding: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("EC key"),
        public_pem: pair.public_key_pem(),
        public_der: rcgen::PublicKeyData::subject_public_key_info(&pair),
        jwks: json!({ "keys": [jwk] }).to_string(),
    }
}

impl Idp {
    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(KID.to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign")
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims of a good token for `TOKEN_LOGIN`.
fn claims() -> Value {
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "carol-0001",
        "email": TOKEN_LOGIN,
        "iat": now(),
        "exp": now() + 600,
    })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

/// Adds `[tenants.jwt]` to tenant `tenant` of the users file at `path`.
fn add_jwt(path: &Path, tenant: &str, jwt: toml::Table) {
    let text = std::fs::read_to_string(path).expect("users file");
    let mut doc: toml::Table = text.parse().expect("users file is TOML");
    let entry = doc
        .get_mut("tenants")
        .and_then(toml::Value::as_array_mut)
        .expect("[[tenants]]")
        .iter_mut()
        .filter_map(toml::Value::as_table_mut)
        .find(|t| t.get("id").and_then(toml::Value::as_str) == Some(tenant))
        .unwrap_or_else(|| panic!("no tenant {tenant} in {text}"));
    entry.insert("jwt".to_owned(), toml::Value::Table(jwt));
    let text = toml::to_string(&doc).expect("serialise users file");
    wire::replace_file(path, text.as_bytes());
}

/// `LOGIN` (password) in tenant `default`; `TOKEN_LOGIN` in tenant `idp`, which trusts
/// `ISSUER` for audience `pop3` with `idp`'s key and reads the login from `email`.
fn token_server(idp: &Idp) -> (Server, TempDir) {
    let jwks = idp.jwks.clone();
    server_with(
        &[
            (&["user", "add", LOGIN], PASSWORD),
            (&["tenant", "add", "idp", "--domain", "idp.example"], ""),
            (&["user", "add", TOKEN_LOGIN], "unused password"),
        ],
        move |users| {
            let mut jwt = toml::Table::new();
            jwt.insert("issuers".into(), toml::Value::from(vec![ISSUER]));
            jwt.insert("audience".into(), toml::Value::from(vec![AUDIENCE]));
            jwt.insert("algorithms".into(), toml::Value::from(vec!["ES256"]));
            jwt.insert("leeway_secs".into(), toml::Value::from(5));
            jwt.insert("user_claim".into(), toml::Value::from("email"));
            jwt.insert("jwks".into(), toml::Value::from(jwks));
            add_jwt(users, "idp", jwt);
        },
    )
}

/// RFC 7628 §3.1: the OAUTHBEARER client response, with or without an authzid.
fn oauthbearer(authzid: Option<&str>, token: &str) -> String {
    let header = authzid.map_or_else(|| "n,,".to_owned(), |a| format!("n,a={a},"));
    b64(format!(
        "{header}\x01host=localhost\x01port=995\x01auth=Bearer {token}\x01\x01"
    ))
}

/// XOAUTH2's client response.
fn xoauth2(login: &str, token: &str) -> String {
    b64(format!("user={login}\x01auth=Bearer {token}\x01\x01"))
}

fn assert_token_login(pop: &mut Client<TlsStream>, reply: &str, what: &str) {
    assert_ok(reply, what);
    // The session is the token's user's: tenant idp's maildrop, empty.
    assert_eq!(pop.cmd("STAT"), "+OK 0 0", "{what}");
}

#[test]
fn valid_bearer_tokens_log_in_with_oauthbearer_and_xoauth2() {
    let idp = idp();
    let (server, _dir) = token_server(&idp);
    let token = idp.sign(&claims());

    let mut pop = tls(&server);
    let capa = pop.lines("CAPA");
    assert!(
        capa.iter().any(|l| l.starts_with("SASL ")
            && l.contains(" OAUTHBEARER")
            && l.contains(" XOAUTH2")),
        "{capa:?}"
    );
    let reply = pop.cmd(&format!(
        "AUTH OAUTHBEARER {}",
        oauthbearer(Some(TOKEN_LOGIN), &token)
    ));
    assert_token_login(&mut pop, &reply, "OAUTHBEARER with authzid");
    pop.quit();

    // Without an authzid the token's issuer picks the tenant and its claim the user.
    let mut pop = tls(&server);
    let reply = pop.cmd(&format!("AUTH OAUTHBEARER {}", oauthbearer(None, &token)));
    assert_token_login(&mut pop, &reply, "OAUTHBEARER without authzid");
    pop.quit();

    // Without an initial response: an empty challenge first.
    let mut pop = tls(&server);
    assert_eq!(pop.cmd("AUTH OAUTHBEARER"), "+ ");
    let reply = pop.cmd(&oauthbearer(Some(TOKEN_LOGIN), &token));
    assert_token_login(&mut pop, &reply, "OAUTHBEARER after a challenge");
    pop.quit();

    let mut pop = tls(&server);
    let reply = pop.cmd(&format!("AUTH XOAUTH2 {}", xoauth2(TOKEN_LOGIN, &token)));
    assert_token_login(&mut pop, &reply, "XOAUTH2");
    pop.quit();

    // Identity providers' tokens with many groups run to kilobytes (RFC 5034 §4 lets the
    // AUTH line exceed the 255-octet command limit).
    let groups: Vec<String> = (0..200).map(|i| format!("group-{i:04}-mail")).collect();
    let big = idp.sign(&with(claims(), "groups", json!(groups)));
    assert!(big.len() > 4096, "token of {} bytes", big.len());
    let mut pop = tls(&server);
    let reply = pop.cmd(&format!(
        "AUTH OAUTHBEARER {}",
        oauthbearer(Some(TOKEN_LOGIN), &big)
    ));
    assert_token_login(&mut pop, &reply, "4 KB token");
    pop.quit();
    let mut pop = tls(&server);
    let reply = pop.cmd(&format!("AUTH XOAUTH2 {}", xoauth2(TOKEN_LOGIN, &big)));
    assert_token_login(&mut pop, &reply, "4 KB token, XOAUTH2");
    pop.quit();
}

/// RFC 7628 §3.2.2: a refused token gets an error challenge, a base64 JSON object with a
/// `status`; the client answers with a dummy response (0x01) and then the server fails the
/// exchange with `-ERR [AUTH]` (RFC 3206 §4: the credentials were wrong). Returns what went
/// wrong, so that one run reports every case.
fn bearer_refusal(server: &Server, auth_line: &str, what: &str) -> Option<String> {
    let mut pop = tls(server);
    let reply = pop.cmd(auth_line);
    let Some(challenge) = reply.strip_prefix("+ ") else {
        return Some(format!(
            "{what}: expected an error challenge, got {reply:?}"
        ));
    };
    let error: Value = match serde_json::from_slice(&unb64(challenge)) {
        Ok(error) => error,
        Err(e) => return Some(format!("{what}: the error challenge is not JSON: {e}")),
    };
    if error["status"] != "invalid_token" {
        return Some(format!("{what}: error challenge {error}"));
    }
    let reply = pop.cmd(&b64([0x01]));
    if !reply.starts_with("-ERR [AUTH]") {
        return Some(format!("{what}: after the dummy response: {reply}"));
    }
    // The session goes on: a password login works on it.
    login_still_works(pop);
    None
}

#[test]
fn refused_bearer_tokens_follow_rfc_7628_error_flow() {
    let idp = idp();
    let (server, _dir) = token_server(&idp);
    let expired = with(
        with(claims(), "exp", json!(now() - 3600)),
        "iat",
        json!(now() - 7200),
    );
    let hs256 = |secret: &[u8]| {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(KID.to_owned());
        jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(secret)).unwrap()
    };
    let cases = [
        ("expired", idp.sign(&expired)),
        (
            "untrusted issuer",
            idp.sign(&with(claims(), "iss", json!("https://evil.test/"))),
        ),
        (
            "wrong audience",
            idp.sign(&with(claims(), "aud", json!("imap"))),
        ),
        // The key-confusion attack: HS256 "signed" with the public key as the HMAC secret.
        (
            "HS256 with the public key PEM",
            hs256(idp.public_pem.as_bytes()),
        ),
        ("HS256 with the public key DER", hs256(&idp.public_der)),
        (
            "token of another user",
            idp.sign(&with(claims(), "email", json!(LOGIN))),
        ),
    ];
    let mut problems: Vec<String> = cases
        .iter()
        .filter_map(|(what, token)| {
            let line = format!("AUTH OAUTHBEARER {}", oauthbearer(Some(TOKEN_LOGIN), token));
            bearer_refusal(&server, &line, &format!("OAUTHBEARER, {what}"))
        })
        .collect();
    let (what, token) = &cases[0];
    let line = format!("AUTH XOAUTH2 {}", xoauth2(TOKEN_LOGIN, token));
    problems.extend(bearer_refusal(&server, &line, &format!("XOAUTH2, {what}")));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The same token that is refused when expired is fine fresh: the cases above failed for
    // their reason, not because tokens never work here.
    let mut pop = tls(&server);
    let reply = pop.cmd(&format!(
        "AUTH OAUTHBEARER {}",
        oauthbearer(Some(TOKEN_LOGIN), &idp.sign(&claims()))
    ));
    assert_token_login(&mut pop, &reply, "fresh token");
    pop.quit();
}
