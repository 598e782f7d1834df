//! The gRPC auth service end to end: the real server on a loopback port, a directory file in
//! a temp folder, and the real clients talking to it over TCP. Each test has its own server
//! and file.

// Helpers are not `#[test]` functions, so `allow-unwrap-in-tests` does not reach them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cloudpop_auth::grpc::{
    AdminAccess, AdminClient, AdminError, GrpcAuthenticator, GrpcClientConfig, serve,
};
use cloudpop_auth::{
    AuthFailure, AuthRequest, Authenticator, BearerScheme, Credential, Directory,
    DirectoryAuthenticator, Login, LookupError, Policy, Principal, Secret,
};
use cloudpop_maildrop::TenantId;
use cloudpop_proto::admin::v1 as admin_pb;
use cloudpop_proto::admin::v1::admin_service_client::AdminServiceClient;
use hmac::{KeyInit, Mac};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use md5::{Digest, Md5};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const ALICE: &str = "alice@acme.example";
const ALICE_PASSWORD: &str = "wonderland";
const ALICE_APOP: &str = "tanstaaf";
const CHALLENGE: &str = "<1896.697170952@dbc.mtview.ca.us>";
const ALICE_CRAM: &str = "tanstaaftanstaaf";
const CRAM_CHALLENGE: &str = "<1896.697170952@postoffice.reston.mci.net>";
const ISSUER: &str = "https://idp.acme.example/";

/// Acme's identity provider: a P-256 key generated once per test binary, and its JWKS.
struct IdentityProvider {
    key: EncodingKey,
    public_pem: String,
    jwks: String,
}

static IDP: LazyLock<IdentityProvider> = LazyLock::new(|| {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let point = pair.public_key_raw();
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "kid": "acme-1", "use": "sig", "alg": "ES256",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..]),
    });
    IdentityProvider {
        key: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
        public_pem: pair.public_key_pem(),
        jwks: json!({ "keys": [jwk] }).to_string(),
    }
});

/// Acme's `[tenants.jwt]` table: the directory API has no setter for it (it is written by
/// hand or by configuration management), so it is spliced into the saved file.
fn acme_jwt_table() -> String {
    format!(
        "[tenants.jwt]\nissuers = [\"{ISSUER}\"]\naudience = [\"pop3\"]\n\
         algorithms = [\"ES256\"]\nuser_claim = \"email\"\njwks = '{}'\n",
        IDP.jwks
    )
}

/// A running server over its own directory file.
struct Server {
    _dir: tempfile::TempDir,
    endpoint: String,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), cloudpop_auth::grpc::ServeError>>,
    alice_id: String,
}

impl Server {
    /// Tenants `acme` (acme.example: TLS only, bearer tokens from [`IDP`]) and `globex`
    /// (globex.example: cleartext allowed); user alice in acme with a password, an APOP
    /// and a CRAM-MD5 secret.
    async fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Server::start_on(listener).await
    }

    async fn start_on(listener: TcpListener) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let alice_id = write_directory(path.clone()).await;
        let directory = DirectoryAuthenticator::open(&path).unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        // The listener is bound already: connections made from now on queue until the
        // server accepts them, so no readiness wait is needed.
        let task = tokio::spawn(serve(
            listener,
            directory,
            None,
            AdminAccess::open(),
            shutdown.clone(),
        ));
        Server {
            _dir: dir,
            endpoint,
            shutdown,
            task,
            alice_id,
        }
    }

    fn authenticator(&self) -> GrpcAuthenticator {
        GrpcAuthenticator::new(&config(&self.endpoint)).unwrap()
    }

    async fn admin(&self) -> AdminClient {
        AdminClient::connect(&self.endpoint, Duration::from_secs(10))
            .await
            .unwrap()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let stopped = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        stopped.unwrap().unwrap().unwrap();
    }
}

async fn write_directory(path: PathBuf) -> String {
    tokio::task::spawn_blocking(move || {
        let mut directory = Directory::new();
        directory
            .add_tenant(tenant("acme"), ["acme.example"])
            .unwrap();
        directory
            .add_tenant(tenant("globex"), ["globex.example"])
            .unwrap();
        let alice = login(ALICE);
        let id = directory
            .add_user(&alice, &Secret::new(ALICE_PASSWORD))
            .unwrap();
        directory
            .set_apop_secret(&alice, Some(&Secret::new(ALICE_APOP)))
            .unwrap();
        directory
            .set_cram_secret(&alice, Some(&Secret::new(ALICE_CRAM)))
            .unwrap();
        let cleartext = Policy {
            cleartext_allowed: true,
            ..Policy::default()
        };
        directory.set_policy(&tenant("globex"), cleartext).unwrap();
        directory.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let globex = "[[tenants]]\nid = \"globex\"";
        assert!(text.contains(globex), "{text}");
        let text = text.replace(globex, &format!("{}\n{globex}", acme_jwt_table()));
        std::fs::write(&path, text).unwrap();
        id.to_string()
    })
    .await
    .unwrap()
}

fn config(endpoint: &str) -> GrpcClientConfig {
    GrpcClientConfig {
        endpoint: endpoint.to_owned(),
        timeout: Duration::from_secs(5),
        max_attempts: 3,
        apop_offered_default: false,
    }
}

async fn channel(endpoint: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn tenant(id: &str) -> TenantId {
    TenantId::new(id).unwrap()
}

fn login(s: &str) -> Login {
    Login::parse(s).unwrap()
}

fn password(login: &str, password: &str) -> AuthRequest {
    AuthRequest {
        login: login.to_owned(),
        credential: Credential::Password(Secret::new(password)),
        client_addr: "192.0.2.7:40000".parse().ok(),
        local_addr: "127.0.0.1:110".parse().ok(),
        tls: true,
    }
}

fn apop(login: &str, secret: &str) -> AuthRequest {
    let digest = hex::encode(Md5::digest(format!("{CHALLENGE}{secret}").as_bytes()));
    AuthRequest {
        credential: Credential::Apop {
            challenge: CHALLENGE.to_owned(),
            digest: Secret::new(digest),
        },
        ..password(login, "")
    }
}

fn cram(login: &str, secret: &str) -> AuthRequest {
    let mut mac = <hmac::Hmac<md5::Md5> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(CRAM_CHALLENGE.as_bytes());
    AuthRequest {
        credential: Credential::CramMd5 {
            challenge: CRAM_CHALLENGE.to_owned(),
            digest: Secret::new(hex::encode(mac.finalize().into_bytes())),
        },
        ..password(login, "")
    }
}

fn bearer(login: &str, token: &str, scheme: BearerScheme) -> AuthRequest {
    AuthRequest {
        credential: Credential::Bearer {
            token: Secret::new(token),
            scheme,
        },
        ..password(login, "")
    }
}

fn without_tls(request: AuthRequest) -> AuthRequest {
    AuthRequest {
        tls: false,
        ..request
    }
}

/// A token from acme's identity provider for `email`, padded with `pad` bytes of claims.
fn token(email: &str, pad: usize) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({
        "iss": ISSUER, "aud": "pop3", "email": email, "exp": now + 300, "pad": "x".repeat(pad),
    });
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("acme-1".to_owned());
    jsonwebtoken::encode(&header, &claims, &IDP.key).unwrap()
}

fn assert_maildrop(principal: &Principal, tenant_id: &str, mailbox: &str) {
    assert_eq!(principal.tenant.as_str(), tenant_id);
    assert_eq!(principal.maildrop.tenant.as_str(), tenant_id);
    assert_eq!(principal.maildrop.mailbox.as_str(), mailbox);
    assert_eq!(principal.user, mailbox);
}

#[tokio::test]
async fn authenticates_passwords_and_apop() {
    let server = Server::start().await;
    let auth = server.authenticator();

    let principal = auth
        .authenticate(password(ALICE, ALICE_PASSWORD))
        .await
        .unwrap();
    assert_maildrop(&principal, "acme", &server.alice_id);
    assert_eq!(principal.login, ALICE);
    assert_eq!(principal.policy.expire_days, None);

    let wrong = auth.authenticate(password(ALICE, "wonderlanD")).await;
    assert_eq!(wrong, Err(AuthFailure::BadCredentials));
    let unknown = auth
        .authenticate(password("nobody@acme.example", ALICE_PASSWORD))
        .await;
    assert_eq!(unknown, Err(AuthFailure::BadCredentials));

    let principal = auth.authenticate(apop(ALICE, ALICE_APOP)).await.unwrap();
    assert_maildrop(&principal, "acme", &server.alice_id);
    let wrong = auth.authenticate(apop(ALICE, "tanstaag")).await;
    assert_eq!(wrong, Err(AuthFailure::BadCredentials));

    // Capabilities come from the server: alice has an APOP and a CRAM-MD5 secret.
    assert!(
        !auth.apop_offered(),
        "the configured default until refreshed"
    );
    assert!(!auth.cram_md5_offered(), "not offered until refreshed");
    assert!(auth.refresh_capabilities().await.unwrap());
    assert!(auth.apop_offered());
    assert!(auth.cram_md5_offered());
    server.stop().await;
}

#[tokio::test]
async fn authenticates_cram_md5() {
    let server = Server::start().await;
    let auth = server.authenticator();
    // RFC 2195 needs no TLS: the secret never crosses the wire.
    let principal = auth
        .authenticate(without_tls(cram(ALICE, ALICE_CRAM)))
        .await
        .unwrap();
    assert_maildrop(&principal, "acme", &server.alice_id);
    for (login, secret) in [
        (ALICE, "tanstaaftanstaag"),
        // The APOP secret is not the CRAM-MD5 secret.
        (ALICE, ALICE_APOP),
        ("nobody@acme.example", ALICE_CRAM),
    ] {
        let result = auth.authenticate(cram(login, secret)).await;
        assert_eq!(result, Err(AuthFailure::BadCredentials), "{login} {secret}");
    }

    // The admin API sets and removes it, and the capability follows.
    let admin = server.admin().await;
    let alice = login(ALICE);
    admin
        .set_cram_secret(&alice, Some(&Secret::new("new-cram-secret")))
        .await
        .unwrap();
    auth.authenticate(cram(ALICE, "new-cram-secret"))
        .await
        .unwrap();
    let old = auth.authenticate(cram(ALICE, ALICE_CRAM)).await;
    assert_eq!(old, Err(AuthFailure::BadCredentials));
    let listed = admin.list_users(None).await.unwrap();
    assert!(listed[0].has_cram_secret);
    admin.set_cram_secret(&alice, None).await.unwrap();
    let removed = auth.authenticate(cram(ALICE, "new-cram-secret")).await;
    assert_eq!(removed, Err(AuthFailure::BadCredentials));
    assert!(!admin.list_users(None).await.unwrap()[0].has_cram_secret);
    auth.refresh_capabilities().await.unwrap();
    assert!(!auth.cram_md5_offered());
    assert!(auth.apop_offered());

    let bad = admin
        .set_cram_secret(&alice, Some(&Secret::new("tab\there hunter2-secret")))
        .await
        .unwrap_err();
    assert!(matches!(bad, AdminError::InvalidArgument(_)), "{bad:?}");
    assert!(!bad.to_string().contains("hunter2"), "{bad}");
    let ghost = admin
        .set_cram_secret(&login("ghost@acme.example"), None)
        .await
        .unwrap_err();
    assert!(matches!(ghost, AdminError::NotFound(_)), "{ghost:?}");
    server.stop().await;
}

#[tokio::test]
async fn cleartext_passwords_need_tls_unless_the_tenant_allows_them() {
    let server = Server::start().await;
    let auth = server.authenticator();
    // Acme has the default policy: refused before the password is checked.
    for pw in [ALICE_PASSWORD, "wrong", ""] {
        let result = auth.authenticate(without_tls(password(ALICE, pw))).await;
        assert_eq!(result, Err(AuthFailure::EncryptionRequired), "{pw:?}");
    }
    // With TLS, checked as usual.
    auth.authenticate(password(ALICE, ALICE_PASSWORD))
        .await
        .unwrap();
    let wrong = auth.authenticate(password(ALICE, "wrong")).await;
    assert_eq!(wrong, Err(AuthFailure::BadCredentials));

    // Globex opted in.
    let admin = server.admin().await;
    let carol = login("carol@globex.example");
    admin
        .add_user(&carol, &Secret::new("carol-pw"))
        .await
        .unwrap();
    let principal = auth
        .authenticate(without_tls(password("carol@globex.example", "carol-pw")))
        .await
        .unwrap();
    assert!(principal.policy.cleartext_allowed);
    let wrong = auth
        .authenticate(without_tls(password("carol@globex.example", "nope")))
        .await;
    assert_eq!(wrong, Err(AuthFailure::BadCredentials));
    let tenants = admin.list_tenants().await.unwrap();
    let policies: Vec<_> = tenants.iter().map(|t| t.policy.cleartext_allowed).collect();
    assert_eq!(policies, [false, true]);
    server.stop().await;
}

#[tokio::test]
async fn authenticates_bearer_tokens() {
    let server = Server::start().await;
    let auth = server.authenticator();
    let small = token(ALICE, 0);
    for (login, scheme) in [
        ("", BearerScheme::OAuthBearer),
        (ALICE, BearerScheme::OAuthBearer),
        ("", BearerScheme::XOAuth2),
        ("ALICE@acme.example", BearerScheme::XOAuth2),
    ] {
        let principal = auth
            .authenticate(bearer(login, &small, scheme))
            .await
            .unwrap();
        assert_maildrop(&principal, "acme", &server.alice_id);
        assert_eq!(principal.login, ALICE);
    }
    // Large tokens travel: 4 KiB and more, up to the 64 KiB the auth service checks.
    for pad in [4 * 1024, 45 * 1024] {
        let large = token(ALICE, pad);
        assert!(
            large.len() > pad && large.len() <= 64 * 1024,
            "{}",
            large.len()
        );
        let principal = auth
            .authenticate(bearer("", &large, BearerScheme::OAuthBearer))
            .await
            .unwrap();
        assert_maildrop(&principal, "acme", &server.alice_id);
    }
    let too_large = token(ALICE, 64 * 1024);
    // Over the 64 KiB checked, but within the gRPC request limit: a definite answer.
    assert!(too_large.len() > 64 * 1024 && too_large.len() < 128 * 1024);
    let refused = auth
        .authenticate(bearer("", &too_large, BearerScheme::OAuthBearer))
        .await;
    assert_eq!(refused, Err(AuthFailure::BadCredentials));

    // HS256 "signed" with the provider's public key, a token for someone else, a tenant
    // without bearer settings: all refused.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("acme-1".to_owned());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({"iss": ISSUER, "aud": "pop3", "email": ALICE, "exp": now + 300});
    let forged = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(IDP.public_pem.as_bytes()),
    )
    .unwrap();
    for (login, token) in [
        ("", forged.as_str()),
        ("bob@acme.example", small.as_str()),
        ("alice@globex.example", small.as_str()),
        ("", "not-a-token"),
    ] {
        let result = auth
            .authenticate(bearer(login, token, BearerScheme::OAuthBearer))
            .await;
        assert_eq!(result, Err(AuthFailure::BadCredentials), "{login:?}");
    }
    // A token is a secret too: acme wants TLS for it.
    for token in [&small, &forged] {
        let result = auth
            .authenticate(without_tls(bearer("", token, BearerScheme::OAuthBearer)))
            .await;
        assert_eq!(result, Err(AuthFailure::EncryptionRequired));
    }

    // An admin edit rewrites the file; the bearer settings survive it.
    let admin = server.admin().await;
    let dave = login("dave@acme.example");
    let dave_id = admin.add_user(&dave, &Secret::new("pw")).await.unwrap();
    let principal = auth
        .authenticate(bearer(
            "",
            &token("dave@acme.example", 0),
            BearerScheme::XOAuth2,
        ))
        .await
        .unwrap();
    assert_maildrop(&principal, "acme", dave_id.as_str());
    server.stop().await;
}

#[tokio::test]
async fn capabilities_refresh_in_the_background() {
    let server = Server::start().await;
    let auth = server.authenticator();
    let shutdown = CancellationToken::new();
    let task = auth.spawn_capabilities_refresh(Duration::from_secs(60), shutdown.clone());
    // The first refresh is immediate.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !auth.apop_offered() {
        assert!(Instant::now() < deadline, "capabilities never refreshed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    task.await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn looks_up_recipients() {
    let server = Server::start().await;
    let auth = server.authenticator();
    let found = auth.lookup_recipient("Alice@ACME.example").await.unwrap();
    assert_maildrop(&found.unwrap(), "acme", &server.alice_id);
    assert_eq!(
        auth.lookup_recipient("bob@acme.example").await.unwrap(),
        None
    );
    assert_eq!(auth.lookup_recipient("not an address").await.unwrap(), None);
    server.stop().await;
}

#[tokio::test]
async fn admin_changes_take_effect_immediately() {
    let server = Server::start().await;
    let auth = server.authenticator();
    let admin = server.admin().await;

    let initech = tenant("initech");
    let created = admin
        .create_tenant(&initech, &["initech.example"])
        .await
        .unwrap();
    assert_eq!(created.domains, ["initech.example"]);
    let grown = admin.add_domain(&initech, "INITECH.test").await.unwrap();
    assert_eq!(grown.domains, ["initech.example", "initech.test"]);
    let tenants = admin.list_tenants().await.unwrap();
    let ids: Vec<_> = tenants.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["acme", "globex", "initech"]);

    let bob = login("bob@initech.test");
    let bob_id = admin.add_user(&bob, &Secret::new("first")).await.unwrap();
    let principal = auth
        .authenticate(password("bob@initech.test", "first"))
        .await
        .unwrap();
    assert_maildrop(&principal, "initech", bob_id.as_str());
    let found = auth.lookup_recipient("bob@initech.test").await.unwrap();
    assert_maildrop(&found.unwrap(), "initech", bob_id.as_str());

    admin
        .set_password(&bob, &Secret::new("second"))
        .await
        .unwrap();
    let old = auth
        .authenticate(password("bob@initech.test", "first"))
        .await;
    assert_eq!(old, Err(AuthFailure::BadCredentials));
    auth.authenticate(password("bob@initech.test", "second"))
        .await
        .unwrap();

    admin.set_disabled(&bob, true).await.unwrap();
    let disabled = auth
        .authenticate(password("bob@initech.test", "second"))
        .await;
    assert!(
        matches!(disabled, Err(AuthFailure::Permanent(_))),
        "{disabled:?}"
    );
    let guessed = auth
        .authenticate(password("bob@initech.test", "guess"))
        .await;
    assert_eq!(guessed, Err(AuthFailure::BadCredentials));
    admin.set_disabled(&bob, false).await.unwrap();
    auth.authenticate(password("bob@initech.test", "second"))
        .await
        .unwrap();

    admin
        .set_apop_secret(&bob, Some(&Secret::new("bobs-apop")))
        .await
        .unwrap();
    auth.authenticate(apop("bob@initech.test", "bobs-apop"))
        .await
        .unwrap();
    admin.set_apop_secret(&bob, None).await.unwrap();
    let removed = auth
        .authenticate(apop("bob@initech.test", "bobs-apop"))
        .await;
    assert_eq!(removed, Err(AuthFailure::BadCredentials));

    assert_eq!(admin.delete_user(&bob).await.unwrap(), bob_id);
    let deleted = auth
        .authenticate(password("bob@initech.test", "second"))
        .await;
    assert_eq!(deleted, Err(AuthFailure::BadCredentials));
    assert_eq!(
        auth.lookup_recipient("bob@initech.test").await.unwrap(),
        None
    );
    server.stop().await;
}

#[tokio::test]
async fn admin_errors_are_typed_and_never_echo_secrets() {
    let server = Server::start().await;
    let admin = server.admin().await;
    let secret = Secret::new("hunter2-secret");
    let alice = login(ALICE);
    let ghost = login("ghost@acme.example");

    let taken = admin.add_user(&alice, &secret).await.unwrap_err();
    assert!(matches!(taken, AdminError::AlreadyExists(_)), "{taken:?}");
    let homeless = admin
        .add_user(&login("x@nowhere.example"), &secret)
        .await
        .unwrap_err();
    assert!(
        matches!(homeless, AdminError::FailedPrecondition(_)),
        "{homeless:?}"
    );
    let empty = admin
        .add_user(&login("new@acme.example"), &Secret::new(""))
        .await
        .unwrap_err();
    assert!(matches!(empty, AdminError::InvalidArgument(_)), "{empty:?}");
    let missing = admin.set_password(&ghost, &secret).await.unwrap_err();
    assert!(matches!(missing, AdminError::NotFound(_)), "{missing:?}");
    let bad_apop = admin
        .set_apop_secret(&alice, Some(&Secret::new("line\r\nbreak hunter2-secret")))
        .await
        .unwrap_err();
    assert!(
        matches!(bad_apop, AdminError::InvalidArgument(_)),
        "{bad_apop:?}"
    );
    let duplicate = admin
        .create_tenant(&tenant("acme"), &[] as &[&str])
        .await
        .unwrap_err();
    assert!(
        matches!(duplicate, AdminError::AlreadyExists(_)),
        "{duplicate:?}"
    );
    let stolen = admin
        .add_domain(&tenant("globex"), "acme.example")
        .await
        .unwrap_err();
    assert!(matches!(stolen, AdminError::AlreadyExists(_)), "{stolen:?}");
    let no_tenant = admin.list_users(Some(&tenant("nope"))).await.unwrap_err();
    assert!(
        matches!(no_tenant, AdminError::NotFound(_)),
        "{no_tenant:?}"
    );

    for error in [taken, homeless, empty, missing, bad_apop, duplicate, stolen] {
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }
    // Nothing was half-done: still exactly alice.
    let users = admin.list_users(None).await.unwrap();
    assert_eq!(users.len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn listing_users_shows_no_secrets() {
    let server = Server::start().await;
    let admin = server.admin().await;
    admin
        .add_user(
            &login("carol@globex.example"),
            &Secret::new("carols-password"),
        )
        .await
        .unwrap();

    let users = admin.list_users(None).await.unwrap();
    let logins: Vec<_> = users.iter().map(|u| u.login.to_string()).collect();
    assert_eq!(logins, [ALICE, "carol@globex.example"]);
    assert!(users[0].has_apop_secret && !users[1].has_apop_secret);
    let globex = admin.list_users(Some(&tenant("globex"))).await.unwrap();
    assert_eq!(globex.len(), 1);
    assert_eq!(globex[0].tenant.as_str(), "globex");

    // What is on the wire, every field of it.
    let mut raw = AdminServiceClient::connect(server.endpoint.clone())
        .await
        .unwrap();
    let listed = raw
        .list_users(admin_pb::ListUsersRequest { tenant_id: None })
        .await
        .unwrap()
        .into_inner();
    let printed = format!("{listed:?}");
    assert!(printed.contains(ALICE), "{printed}");
    for secret in [
        ALICE_PASSWORD,
        ALICE_APOP,
        "carols-password",
        "argon2",
        "$v=",
    ] {
        assert!(!printed.contains(secret), "{secret} in {printed}");
    }
    server.stop().await;
}

#[tokio::test]
async fn concurrent_admin_writes_are_not_lost() {
    let server = Server::start().await;
    let admin = server.admin().await;
    let adds = (0..6).map(|i| {
        let admin = admin.clone();
        tokio::spawn(async move {
            let user = login(&format!("user{i}@globex.example"));
            admin.add_user(&user, &Secret::new(format!("pw{i}"))).await
        })
    });
    for add in adds.collect::<Vec<_>>() {
        add.await.unwrap().unwrap();
    }
    let globex = admin.list_users(Some(&tenant("globex"))).await.unwrap();
    assert_eq!(globex.len(), 6);
    let auth = server.authenticator();
    for i in 0..6 {
        auth.authenticate(password(
            &format!("user{i}@globex.example"),
            &format!("pw{i}"),
        ))
        .await
        .unwrap();
    }
    server.stop().await;
}

#[tokio::test]
async fn same_local_part_in_two_tenants_is_two_principals() {
    let server = Server::start().await;
    let admin = server.admin().await;
    let auth = server.authenticator();
    let other_id = admin
        .add_user(&login("alice@globex.example"), &Secret::new("globex-pw"))
        .await
        .unwrap();
    assert_ne!(other_id.as_str(), server.alice_id);

    let acme = auth
        .authenticate(password(ALICE, ALICE_PASSWORD))
        .await
        .unwrap();
    let globex = auth
        .authenticate(password("alice@globex.example", "globex-pw"))
        .await
        .unwrap();
    assert_maildrop(&acme, "acme", &server.alice_id);
    assert_maildrop(&globex, "globex", other_id.as_str());
    assert_ne!(acme.maildrop, globex.maildrop);

    // Each password opens only its own tenant's alice.
    let crossed = auth
        .authenticate(password("alice@globex.example", ALICE_PASSWORD))
        .await;
    assert_eq!(crossed, Err(AuthFailure::BadCredentials));
    let crossed = auth.authenticate(password(ALICE, "globex-pw")).await;
    assert_eq!(crossed, Err(AuthFailure::BadCredentials));
    server.stop().await;
}

#[tokio::test]
async fn crafted_logins_never_reach_another_maildrop() {
    let server = Server::start().await;
    let auth = server.authenticator();
    let long = format!("{}@acme.example", "a".repeat(300 - "@acme.example".len()));
    assert_eq!(long.len(), 300);
    let crafted = [
        "../alice@acme.example",
        "alice/../alice@acme.example",
        "..%2falice@acme.example",
        "a%2fb@acme.example",
        "alice\0@acme.example",
        "alice@acme.example\0",
        "alice\r\n@acme.example",
        " alice@acme.example",
        "alice@acme.example ",
        "alice@acme.example.",
        "alice@acme.example@acme.example",
        "alice@../acme.example",
        "alice",
        "@acme.example",
        // The same local part under another tenant's domain is another (absent) user.
        "alice@globex.example",
        long.as_str(),
    ];
    for login in crafted {
        let result = auth.authenticate(password(login, ALICE_PASSWORD)).await;
        assert_eq!(result, Err(AuthFailure::BadCredentials), "{login:?}");
        let result = auth.authenticate(apop(login, ALICE_APOP)).await;
        assert_eq!(result, Err(AuthFailure::BadCredentials), "{login:?}");
        assert_eq!(auth.lookup_recipient(login).await, Ok(None), "{login:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn health_reports_serving() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let server = Server::start().await;
    let mut health = HealthClient::new(channel(&server.endpoint).await);
    for service in [
        "",
        "cloudpop.auth.v1.AuthService",
        "cloudpop.admin.v1.AdminService",
    ] {
        let request = HealthCheckRequest {
            service: service.to_owned(),
        };
        let status = health.check(request).await.unwrap().into_inner().status();
        assert_eq!(status, ServingStatus::Serving, "{service:?}");
    }
    let unknown = HealthCheckRequest {
        service: "no.such.Service".to_owned(),
    };
    let error = health.check(unknown).await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::NotFound);
    server.stop().await;
}

#[tokio::test]
async fn reflection_lists_both_services() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let server = Server::start().await;
    let mut reflection = ServerReflectionClient::new(channel(&server.endpoint).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("not a service list: {response:?}");
    };
    let mut names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "cloudpop.admin.v1.AdminService",
            "cloudpop.auth.v1.AuthService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
        ]
    );
    server.stop().await;
}

/// A loopback port with nothing listening on it (as far as a test can arrange that).
fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test]
async fn auth_down_is_temporary_and_recovers_without_a_new_client() {
    let addr = closed_port();
    let config = GrpcClientConfig {
        timeout: Duration::from_millis(500),
        ..config(&format!("http://{addr}"))
    };
    let auth = GrpcAuthenticator::new(&config).unwrap();

    let started = Instant::now();
    let down = auth.authenticate(password(ALICE, ALICE_PASSWORD)).await;
    let elapsed = started.elapsed();
    eprintln!("auth down (refused): {down:?} after {elapsed:?}");
    assert!(matches!(down, Err(AuthFailure::Temporary(_))), "{down:?}");
    assert!(
        elapsed <= config.worst_case() + Duration::from_millis(500),
        "{elapsed:?}"
    );
    // Refused connections fail fast: what remains is the backoff between the 3 attempts.
    assert!(
        elapsed >= Duration::from_millis(25 + 50),
        "{elapsed:?}: not retried?"
    );
    let lookup = auth.lookup_recipient(ALICE).await;
    assert!(
        matches!(lookup, Err(LookupError::Temporary(_))),
        "{lookup:?}"
    );
    assert!(auth.refresh_capabilities().await.is_err());
    assert!(
        !auth.apop_offered(),
        "the default is kept while auth is down"
    );

    let server = Server::start_on(TcpListener::bind(addr).await.unwrap()).await;
    let principal = auth
        .authenticate(password(ALICE, ALICE_PASSWORD))
        .await
        .unwrap();
    assert_maildrop(&principal, "acme", &server.alice_id);
    server.stop().await;
}

#[tokio::test]
async fn unresponsive_auth_times_out_as_temporary() {
    // Bound but never accepted: the kernel completes the TCP handshake, then nothing answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = GrpcClientConfig {
        timeout: Duration::from_millis(300),
        ..config(&format!("http://{}", silent.local_addr().unwrap()))
    };
    let auth = GrpcAuthenticator::new(&config).unwrap();

    let started = Instant::now();
    let result = auth.authenticate(password(ALICE, ALICE_PASSWORD)).await;
    let elapsed = started.elapsed();
    eprintln!("auth silent: {result:?} after {elapsed:?}");
    assert!(
        matches!(result, Err(AuthFailure::Temporary(_))),
        "{result:?}"
    );
    // Every attempt waited its whole timeout: all of them were made.
    assert!(
        elapsed >= config.timeout * config.max_attempts,
        "{elapsed:?}"
    );
    assert!(
        elapsed <= config.worst_case() + Duration::from_millis(500),
        "{elapsed:?} > {:?}",
        config.worst_case()
    );
    let started = Instant::now();
    let lookup = auth.lookup_recipient(ALICE).await;
    assert!(
        matches!(lookup, Err(LookupError::Temporary(_))),
        "{lookup:?}"
    );
    assert!(started.elapsed() <= config.worst_case() + Duration::from_millis(500));
    drop(silent);
}

#[tokio::test]
async fn admin_client_reports_an_unreachable_service() {
    let addr = closed_port();
    let error = AdminClient::connect(&format!("http://{addr}"), Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(matches!(error, AdminError::Unavailable { .. }), "{error:?}");
    assert!(error.to_string().contains(&addr.to_string()), "{error}");
    let error = AdminClient::connect("localhost:1", Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(
        matches!(error, AdminError::InvalidEndpoint { .. }),
        "{error:?}"
    );
}
