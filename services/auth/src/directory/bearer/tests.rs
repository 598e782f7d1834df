//! Bearer tokens through the real seam: a directory file with JWT settings, JWKS made from
//! keys generated at test time, tokens signed with jsonwebtoken.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::authenticator::{AuthFailure, AuthRequest, Authenticator, BearerScheme, Credential};
use crate::directory::password::PasswordDigest;
use crate::directory::{Directory, DirectoryAuthenticator, DirectoryError};
use crate::secret::Secret;

const ACME_ISSUER: &str = "https://idp.acme.example/";
const GLOBEX_ISSUER: &str = "https://login.globex.example";

/// A signing key and its public half as a JWK.
struct TestKey {
    alg: Algorithm,
    encoding: EncodingKey,
    /// The public key as PEM: what an attacker knows and tries as an HMAC secret.
    public_pem: String,
    /// The public JWK, without `kid`.
    jwk: Value,
}

impl TestKey {
    fn jwk(&self, kid: &str) -> Value {
        let mut jwk = self.jwk.clone();
        jwk["kid"] = json!(kid);
        jwk
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn ec_key() -> TestKey {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let point = pair.public_key_raw();
    assert_eq!(point.len(), 65, "uncompressed P-256 point");
    TestKey {
        alg: Algorithm::ES256,
        encoding: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
        public_pem: pair.public_key_pem(),
        jwk: json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256",
            "x": b64(&point[1..33]), "y": b64(&point[33..]),
        }),
    }
}

fn ed_key() -> TestKey {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    TestKey {
        alg: Algorithm::EdDSA,
        encoding: EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()).unwrap(),
        public_pem: pair.public_key_pem(),
        jwk: json!({
            "kty": "OKP", "crv": "Ed25519", "x": b64(pair.public_key_raw()),
        }),
    }
}

fn rsa_key() -> TestKey {
    let pair = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .unwrap();
    // The raw public key is PKCS#1; jsonwebtoken turns it into n and e.
    let decoding = jsonwebtoken::DecodingKey::from_rsa_der(pair.public_key_raw());
    let jwk = jsonwebtoken::jwk::Jwk::from_decoding_key(&decoding, None).unwrap();
    TestKey {
        alg: Algorithm::RS256,
        encoding: EncodingKey::from_rsa_pem(pair.serialize_pem().as_bytes()).unwrap(),
        public_pem: pair.public_key_pem(),
        jwk: serde_json::to_value(jwk).unwrap(),
    }
}

/// Generated once per test binary: RSA key generation is slow in debug builds.
static EC: LazyLock<TestKey> = LazyLock::new(ec_key);
static ED: LazyLock<TestKey> = LazyLock::new(ed_key);
static RSA: LazyLock<TestKey> = LazyLock::new(rsa_key);
/// Globex's key (inline JWKS).
static GLOBEX: LazyLock<TestKey> = LazyLock::new(ec_key);

fn jwks(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

fn acme_jwks() -> String {
    jwks(&[EC.jwk("ec-1"), ED.jwk("ed-1"), RSA.jwk("rsa-1")])
}

fn directory_text() -> String {
    let phc = PasswordDigest::dummy().as_phc().to_owned();
    let user = |login: &str, id: &str| {
        format!("[[users]]\nlogin = \"{login}\"\nid = \"{id}\"\npassword = \"{phc}\"\n")
    };
    format!(
        r#"
[[tenants]]
id = "acme"
domains = ["acme.example"]
[tenants.jwt]
issuers = ["{ACME_ISSUER}"]
audience = ["pop3", "imap"]
algorithms = ["ES256", "RS256", "EdDSA"]
leeway_secs = 60
user_claim = "email"
jwks_file = "acme-jwks.json"

[[tenants]]
id = "hooli"
domains = ["hooli.example"]
[tenants.jwt]
issuers = ["{ACME_ISSUER}"]
audience = ["pop3"]
algorithms = ["ES256"]
jwks_file = "acme-jwks.json"

[[tenants]]
id = "globex"
domains = ["globex.example"]
[tenants.policy]
cleartext_allowed = true
[tenants.jwt]
issuers = ["{GLOBEX_ISSUER}"]
audience = ["pop3"]
algorithms = ["ES256"]
user_claim = "upn"
jwks = '{globex}'

[[tenants]]
id = "initech"
domains = ["initech.example"]

{alice}{carol}disabled = true
{bob}{dan}{peter}"#,
        globex = jwks(&[GLOBEX.jwk("g-1")]),
        alice = user("alice@acme.example", "u-alice"),
        carol = user("carol@acme.example", "u-carol"),
        bob = user("bob@globex.example", "u-bob"),
        dan = user("dan@hooli.example", "u-dan"),
        peter = user("peter@initech.example", "u-peter"),
    )
}

struct Fixture {
    dir: tempfile::TempDir,
    auth: DirectoryAuthenticator,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        replace_file(&dir.path().join("acme-jwks.json"), &acme_jwks());
        replace_file(&dir.path().join("users.toml"), &directory_text());
        let auth = DirectoryAuthenticator::open(dir.path().join("users.toml")).unwrap();
        Fixture { dir, auth }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    async fn bearer(&self, login: &str, token: &str, tls: bool) -> Result<String, AuthFailure> {
        let request = AuthRequest {
            login: login.to_owned(),
            credential: Credential::Bearer {
                token: Secret::new(token),
                scheme: BearerScheme::OAuthBearer,
            },
            client_addr: None,
            local_addr: None,
            tls,
        };
        self.auth
            .authenticate(request)
            .await
            .map(|principal| format!("{}/{}", principal.tenant, principal.user))
    }
}

fn replace_file(path: &Path, text: &str) {
    let temp = path.with_extension("new");
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims of a good token for `email` from acme's identity provider.
fn claims(email: &str) -> Value {
    json!({
        "iss": ACME_ISSUER,
        "aud": "pop3",
        "sub": "248289761001",
        "email": email,
        "iat": now(),
        "exp": now() + 600,
    })
}

fn sign(key: &TestKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(key.alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
}

fn with(mut claims: Value, field: &str, value: Value) -> Value {
    claims[field] = value;
    claims
}

fn without(mut claims: Value, field: &str) -> Value {
    claims.as_object_mut().unwrap().remove(field);
    claims
}

#[tokio::test]
async fn valid_tokens_prove_their_user() {
    let f = Fixture::new();
    let alice = claims("alice@acme.example");
    for (key, kid) in [(&*EC, "ec-1"), (&*ED, "ed-1"), (&*RSA, "rsa-1")] {
        let token = sign(key, Some(kid), &alice);
        assert_eq!(f.bearer("", &token, true).await.unwrap(), "acme/u-alice");
        // The named login is compared as logins are: case-insensitively.
        let named = f.bearer("Alice@ACME.example", &token, true).await;
        assert_eq!(named.unwrap(), "acme/u-alice", "{kid}");
    }
    // An audience list needs only one match; XOAUTH2 is checked the same way.
    let token = sign(
        &EC,
        Some("ec-1"),
        &with(alice, "aud", json!(["other", "imap"])),
    );
    let request = AuthRequest {
        login: "alice@acme.example".into(),
        credential: Credential::Bearer {
            token: Secret::new(token),
            scheme: BearerScheme::XOAuth2,
        },
        client_addr: None,
        local_addr: None,
        tls: true,
    };
    assert_eq!(request.credential.mechanism(), "XOAUTH2");
    assert_eq!(f.auth.authenticate(request).await.unwrap().user, "u-alice");
}

#[tokio::test]
async fn times_are_checked_with_leeway() {
    let f = Fixture::new();
    let alice = || claims("alice@acme.example");
    let refused = [
        with(alice(), "exp", json!(now() - 3600)),
        with(alice(), "nbf", json!(now() + 3600)),
        without(alice(), "exp"),
    ];
    for claims in refused {
        let token = sign(&EC, Some("ec-1"), &claims);
        let result = f.bearer("", &token, true).await;
        assert_eq!(result, Err(AuthFailure::BadCredentials), "{claims}");
    }
    // Within the tenant's 60 s of clock skew.
    let accepted = [
        with(alice(), "exp", json!(now() - 20)),
        with(alice(), "nbf", json!(now() + 20)),
    ];
    for claims in accepted {
        let token = sign(&EC, Some("ec-1"), &claims);
        assert!(f.bearer("", &token, true).await.is_ok(), "{claims}");
    }
}

#[tokio::test]
async fn issuer_and_audience_must_be_trusted() {
    let f = Fixture::new();
    let alice = || claims("alice@acme.example");
    let cases = [
        with(alice(), "iss", json!("https://evil.example/")),
        with(alice(), "aud", json!("smtp")),
        with(alice(), "aud", json!(["smtp", "web"])),
        without(alice(), "aud"),
        without(alice(), "iss"),
    ];
    for claims in cases {
        let token = sign(&EC, Some("ec-1"), &claims);
        for login in ["", "alice@acme.example"] {
            let result = f.bearer(login, &token, true).await;
            assert_eq!(
                result,
                Err(AuthFailure::BadCredentials),
                "{login:?} {claims}"
            );
        }
    }
    // Globex's issuer is trusted, but not with acme's keys, and not for acme's users.
    let token = sign(
        &EC,
        Some("ec-1"),
        &with(alice(), "iss", json!(GLOBEX_ISSUER)),
    );
    assert_eq!(
        f.bearer("", &token, true).await,
        Err(AuthFailure::BadCredentials)
    );
}

#[tokio::test]
async fn hmac_and_unsigned_tokens_are_refused() {
    let f = Fixture::new();
    let alice = claims("alice@acme.example");
    // The classic confusion attack: HS256 "signed" with the public key as the HMAC secret.
    for secret in [EC.public_pem.as_bytes(), RSA.public_pem.as_bytes(), b"ec-1"] {
        for kid in [Some("ec-1"), Some("rsa-1"), None] {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = kid.map(str::to_owned);
            let token =
                jsonwebtoken::encode(&header, &alice, &EncodingKey::from_secret(secret)).unwrap();
            let result = f.bearer("alice@acme.example", &token, true).await;
            assert_eq!(result, Err(AuthFailure::BadCredentials), "{kid:?}");
        }
    }
    // alg "none", with and without a signature part.
    let header = b64(br#"{"alg":"none","typ":"JWT","kid":"ec-1"}"#);
    let payload = b64(alice.to_string().as_bytes());
    for token in [
        format!("{header}.{payload}."),
        format!("{header}.{payload}"),
        format!("{header}.{payload}.{}", b64(b"sig")),
    ] {
        let result = f.bearer("alice@acme.example", &token, true).await;
        assert_eq!(result, Err(AuthFailure::BadCredentials), "{token}");
    }
}

#[tokio::test]
async fn keys_must_fit_the_algorithm_and_kid() {
    let f = Fixture::new();
    let alice = claims("alice@acme.example");
    for (key, kid) in [
        // A valid signature, but the kid names a key of another type.
        (&*RSA, Some("ec-1")),
        (&*EC, Some("rsa-1")),
        // Unknown kid, and no kid with several keys to choose from.
        (&*EC, Some("ec-2")),
        (&*EC, None),
        // A key the tenant does not have.
        (&*GLOBEX, Some("ec-1")),
    ] {
        let token = sign(key, kid, &alice);
        let result = f.bearer("", &token, true).await;
        assert_eq!(result, Err(AuthFailure::BadCredentials), "{kid:?}");
    }
    // Globex has one key: no kid is needed. Its user claim is "upn".
    let bob = json!({
        "iss": GLOBEX_ISSUER, "aud": "pop3", "exp": now() + 60, "upn": "bob@globex.example",
    });
    let token = sign(&GLOBEX, None, &bob);
    assert_eq!(f.bearer("", &token, true).await.unwrap(), "globex/u-bob");
    // Globex allows only ES256: acme's EdDSA key would not be used for it even if it had it.
    let token = sign(&ED, None, &bob);
    assert_eq!(
        f.bearer("", &token, true).await,
        Err(AuthFailure::BadCredentials)
    );
}

#[tokio::test]
async fn tokens_of_several_kilobytes_work_and_huge_ones_do_not() {
    let f = Fixture::new();
    let big = with(
        claims("alice@acme.example"),
        "groups",
        json!(vec!["some-rather-long-group-name"; 200]),
    );
    let token = sign(&EC, Some("ec-1"), &big);
    assert!(token.len() > 4096 + 1024, "{}", token.len());
    assert_eq!(f.bearer("", &token, true).await.unwrap(), "acme/u-alice");

    let near_limit = with(
        claims("alice@acme.example"),
        "pad",
        json!("x".repeat(40 * 1024)),
    );
    let token = sign(&RSA, Some("rsa-1"), &near_limit);
    assert!(token.len() > 50 * 1024 && token.len() <= super::MAX_TOKEN_LEN);
    assert!(f.bearer("", &token, true).await.is_ok());

    let huge = with(
        claims("alice@acme.example"),
        "pad",
        json!("x".repeat(64 * 1024)),
    );
    let token = sign(&EC, Some("ec-1"), &huge);
    assert_eq!(
        f.bearer("", &token, true).await,
        Err(AuthFailure::BadCredentials)
    );
}

#[tokio::test]
async fn the_user_must_belong_to_the_tenant_and_match_the_named_login() {
    let f = Fixture::new();
    let cases = [
        // Acme's provider vouching for a user of another tenant.
        ("", "bob@globex.example"),
        ("bob@globex.example", "bob@globex.example"),
        ("", "peter@initech.example"),
        // Named login and token disagree.
        ("bob@globex.example", "alice@acme.example"),
        ("carol@acme.example", "alice@acme.example"),
        // Not a login, or no such user.
        ("", "alice"),
        ("", "nobody@acme.example"),
        // A named login that is not a login at all.
        ("../alice@acme.example", "alice@acme.example"),
    ];
    for (named, email) in cases {
        let token = sign(&EC, Some("ec-1"), &claims(email));
        let result = f.bearer(named, &token, true).await;
        assert_eq!(
            result,
            Err(AuthFailure::BadCredentials),
            "{named:?} {email}"
        );
    }
    let token = sign(
        &EC,
        Some("ec-1"),
        &with(claims("x"), "email", json!(["alice@acme.example"])),
    );
    assert_eq!(
        f.bearer("", &token, true).await,
        Err(AuthFailure::BadCredentials),
        "a user claim that is not a string"
    );
}

#[tokio::test]
async fn tenants_sharing_an_issuer_each_get_their_own_users() {
    let f = Fixture::new();
    let token = sign(&EC, Some("ec-1"), &claims("dan@hooli.example"));
    assert_eq!(f.bearer("", &token, true).await.unwrap(), "hooli/u-dan");
    assert_eq!(
        f.bearer("dan@hooli.example", &token, true).await.unwrap(),
        "hooli/u-dan"
    );
    // Hooli allows only ES256, so acme's RSA key signs nothing for it.
    let token = sign(&RSA, Some("rsa-1"), &claims("dan@hooli.example"));
    assert_eq!(
        f.bearer("", &token, true).await,
        Err(AuthFailure::BadCredentials)
    );
}

#[tokio::test]
async fn tenants_without_jwt_settings_refuse_tokens() {
    let f = Fixture::new();
    let token = sign(&EC, Some("ec-1"), &claims("peter@initech.example"));
    for named in ["peter@initech.example", ""] {
        let result = f.bearer(named, &token, true).await;
        assert_eq!(result, Err(AuthFailure::BadCredentials), "{named:?}");
    }
    for garbage in ["", "not a token", "a.b.c", "eyJhbGciOiJFUzI1NiJ9..."] {
        let result = f.bearer("", garbage, true).await;
        assert_eq!(result, Err(AuthFailure::BadCredentials), "{garbage:?}");
    }
}

#[tokio::test]
async fn tokens_follow_the_cleartext_policy() {
    let f = Fixture::new();
    let good = sign(&EC, Some("ec-1"), &claims("alice@acme.example"));
    let bad = sign(&GLOBEX, Some("ec-1"), &claims("alice@acme.example"));
    // Acme does not allow cleartext: the same answer for a good and a bad token, named or not.
    for token in [&good, &bad] {
        for named in ["", "alice@acme.example"] {
            let result = f.bearer(named, token, false).await;
            assert_eq!(result, Err(AuthFailure::EncryptionRequired), "{named:?}");
        }
    }
    // Globex allows it.
    let bob = json!({
        "iss": GLOBEX_ISSUER, "aud": "pop3", "exp": now() + 60, "upn": "bob@globex.example",
    });
    let token = sign(&GLOBEX, None, &bob);
    assert_eq!(f.bearer("", &token, false).await.unwrap(), "globex/u-bob");
}

#[tokio::test]
async fn disabled_users_are_told_only_with_a_valid_token() {
    let f = Fixture::new();
    let token = sign(&EC, Some("ec-1"), &claims("carol@acme.example"));
    let result = f.bearer("", &token, true).await;
    assert!(
        matches!(result, Err(AuthFailure::Permanent(_))),
        "{result:?}"
    );
    let forged = sign(&GLOBEX, Some("ec-1"), &claims("carol@acme.example"));
    assert_eq!(
        f.bearer("", &forged, true).await,
        Err(AuthFailure::BadCredentials)
    );
}

#[tokio::test]
async fn jwks_files_are_reloaded_and_a_broken_one_keeps_the_old_keys() {
    let f = Fixture::new();
    let old = sign(&EC, Some("ec-1"), &claims("alice@acme.example"));
    assert!(f.bearer("", &old, true).await.is_ok());

    // Key rotation: only the JWKS file changes.
    let rotated = ec_key();
    replace_file(
        &f.path("acme-jwks.json"),
        &jwks(&[rotated.jwk("ec-2"), RSA.jwk("rsa-1")]),
    );
    assert!(reload(&f.auth).unwrap());
    let new = sign(&rotated, Some("ec-2"), &claims("alice@acme.example"));
    assert_eq!(f.bearer("", &new, true).await.unwrap(), "acme/u-alice");
    assert_eq!(
        f.bearer("", &old, true).await,
        Err(AuthFailure::BadCredentials)
    );

    // A JWKS file that cannot be read, or does not parse: warn, keep what works.
    std::fs::remove_file(f.path("acme-jwks.json")).unwrap();
    let error = reload(&f.auth).unwrap_err();
    assert!(matches!(error, DirectoryError::ReadJwks { .. }), "{error}");
    assert!(
        matches!(f.auth.reload_if_changed(), Ok(false)),
        "warned twice"
    );
    assert!(f.bearer("", &new, true).await.is_ok());
    replace_file(&f.path("acme-jwks.json"), "{\"keys\": [");
    let error = reload(&f.auth).unwrap_err();
    assert!(
        matches!(error, DirectoryError::InvalidJwt { .. }),
        "{error}"
    );
    assert!(f.bearer("", &new, true).await.is_ok());
}

/// Two polls: the first sees a new version, the second takes (or refuses) it once it has
/// settled.
fn reload(auth: &DirectoryAuthenticator) -> Result<bool, DirectoryError> {
    assert!(
        matches!(auth.reload_if_changed(), Ok(false)),
        "taken before it settled"
    );
    auth.reload_if_changed()
}

/// A directory file with one tenant whose `[tenants.jwt]` table is `jwt`.
fn load_jwt(jwt: &str) -> Result<Directory, DirectoryError> {
    let text = format!("[[tenants]]\nid = \"t\"\ndomains = [\"t.example\"]\n[tenants.jwt]\n{jwt}");
    Directory::from_text(Path::new("/nonexistent/users.toml"), &text)
}

#[test]
fn unsafe_or_broken_settings_are_refused_at_load() {
    let ec = jwks(&[EC.jwk("ec-1")]);
    let base = |algorithms: &str, jwks: &str| {
        format!(
            "issuers = [\"{ACME_ISSUER}\"]\naudience = [\"pop3\"]\nalgorithms = {algorithms}\n\
             jwks = '{jwks}'\n"
        )
    };
    assert!(load_jwt(&base("[\"ES256\"]", &ec)).is_ok());
    let oct = jwks(&[json!({"kty": "oct", "k": b64(b"secret"), "kid": "h"})]);
    let hs_jwk = jwks(&[with(EC.jwk("ec-1"), "alg", json!("HS256"))]);
    let bad_point = jwks(&[with(EC.jwk("ec-1"), "x", json!(b64(b"short")))]);
    let cases = [
        base("[\"HS256\"]", &ec),
        base("[\"ES256\", \"HS512\"]", &ec),
        base("[\"none\"]", &ec),
        base("[]", &ec),
        base("[\"ES256\"]", &oct),
        base("[\"ES256\"]", &hs_jwk),
        base("[\"ES256\"]", &bad_point),
        base("[\"ES256\"]", "{\"keys\": []}"),
        base("[\"ES256\"]", "not json"),
        // No key fits the only algorithm allowed.
        base("[\"RS256\"]", &ec),
        format!("issuers = []\naudience = [\"pop3\"]\nalgorithms = [\"ES256\"]\njwks = '{ec}'\n"),
        format!("issuers = [\"i\"]\naudience = []\nalgorithms = [\"ES256\"]\njwks = '{ec}'\n"),
        format!("{}leeway_secs = 86400\n", base("[\"ES256\"]", &ec)),
        format!("{}user_claim = \"\"\n", base("[\"ES256\"]", &ec)),
        "issuers = [\"i\"]\naudience = [\"a\"]\nalgorithms = [\"ES256\"]\n".to_owned(),
    ];
    for jwt in cases {
        let error = load_jwt(&jwt).unwrap_err();
        assert!(
            matches!(error, DirectoryError::InvalidJwt { .. }),
            "{error} for\n{jwt}"
        );
    }
    let error = load_jwt(&base("[\"ES256\"]", &ec).replace("jwks = ", "colour = ")).unwrap_err();
    assert!(matches!(error, DirectoryError::Syntax { .. }), "{error}");
    // An encryption key next to a signing key is skipped, not an error.
    let mixed = jwks(&[
        EC.jwk("ec-1"),
        json!({"kty": "RSA", "use": "enc", "alg": "RSA-OAEP", "n": "AQAB", "e": "AQAB"}),
    ]);
    assert!(load_jwt(&base("[\"ES256\"]", &mixed)).is_ok());
}

#[test]
fn jwks_files_are_found_next_to_the_directory_and_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.toml");
    let text = "[[tenants]]\nid = \"t\"\ndomains = [\"t.example\"]\n[tenants.jwt]\n\
                issuers = [\"i\"]\naudience = [\"a\"]\nalgorithms = [\"ES256\"]\n\
                jwks_file = \"keys/t.json\"\n";
    replace_file(&path, text);
    let error = Directory::load(&path).unwrap_err();
    assert!(
        matches!(&error, DirectoryError::ReadJwks { tenant, path, .. }
            if tenant == "t" && path.ends_with("keys/t.json")),
        "{error}"
    );
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    replace_file(&dir.path().join("keys/t.json"), &jwks(&[EC.jwk("k")]));
    let directory = Directory::load(&path).unwrap();
    let both = text.replace("jwks_file", &format!("jwks = '{}'\njwks_file", jwks(&[])));
    replace_file(&dir.path().join("both.toml"), &both);
    let error = Directory::load(dir.path().join("both.toml")).unwrap_err();
    assert!(
        matches!(error, DirectoryError::InvalidJwt { .. }),
        "{error}"
    );

    // Saving keeps the table as written (the path, not the keys).
    let saved = dir.path().join("saved.toml");
    directory.save(&saved).unwrap();
    let written = std::fs::read_to_string(&saved).unwrap();
    assert!(written.contains("[tenants.jwt]"), "{written}");
    assert!(written.contains("jwks_file = \"keys/t.json\""), "{written}");
    assert!(written.contains("leeway_secs = 60"), "{written}");
    assert!(written.contains("user_claim = \"email\""), "{written}");
    let again = Directory::load(&saved).unwrap();
    assert_eq!(again.tenants(), directory.tenants());
}
