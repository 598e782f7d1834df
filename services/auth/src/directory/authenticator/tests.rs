use std::sync::LazyLock;
use std::time::Duration;

use tokio::time::{Instant as TokioInstant, sleep};

use super::*;
use crate::secret::Secret;

const CHALLENGE: &str = "<1896.697170952@dbc.mtview.ca.us>";
const RFC_DIGEST: &str = "c4c9334bac560ecc979e58001b3e22fb";
/// RFC 2195 §2's example: challenge, secret and the digest user "tim" sends.
const CRAM_CHALLENGE: &str = "<1896.697170952@postoffice.reston.mci.net>";
const CRAM_SECRET: &str = "tanstaaftanstaaf";
const CRAM_DIGEST: &str = "b913a602c7eda7a495b4e6e7334d3890";

/// Hashed once for the whole test binary: argon2 is slow by design.
static WONDERLAND: LazyLock<String> = LazyLock::new(|| {
    PasswordDigest::hash(b"wonderland")
        .unwrap()
        .as_phc()
        .to_owned()
});

fn directory_text(alice_hash: &str, extra_users: &str) -> String {
    format!(
        r#"
[[tenants]]
id = "acme"
domains = ["acme.example"]

[[tenants]]
id = "strict"
domains = ["strict.example"]
[tenants.policy]
login_delay_secs = 60
cleartext_allowed = false

[[tenants]]
id = "open"
domains = ["open.example"]
[tenants.policy]
cleartext_allowed = true

[[users]]
login = "alice@acme.example"
id = "u-alice"
password = "{alice_hash}"

[[users]]
login = "mallory@acme.example"
id = "u-mallory"
password = "{alice_hash}"
disabled = true

[[users]]
login = "dave@strict.example"
id = "u-dave"
password = "{alice_hash}"
apop_secret = "tanstaaf"

[[users]]
login = "tim@open.example"
id = "u-tim"
password = "{alice_hash}"
cram_secret = "{CRAM_SECRET}"
{extra_users}"#
    )
}

/// Replaces the file the way an editor or `cloudpop admin` does: write aside, then rename.
fn replace_file(path: &Path, text: &str) {
    let temp = path.with_extension("new");
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, path).unwrap();
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

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    auth: DirectoryAuthenticator,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.toml");
    replace_file(&path, &directory_text(&WONDERLAND, ""));
    let auth = DirectoryAuthenticator::open(&path).unwrap();
    Fixture {
        _dir: dir,
        path,
        auth,
    }
}

fn request(login: &str, credential: Credential) -> AuthRequest {
    AuthRequest {
        login: login.into(),
        credential,
        client_addr: None,
        local_addr: None,
        tls: true,
    }
}

fn password(s: &str) -> Credential {
    Credential::Password(Secret::new(s))
}

fn apop(digest: &str) -> Credential {
    Credential::Apop {
        challenge: CHALLENGE.into(),
        digest: Secret::new(digest),
    }
}

fn cram(digest: &str) -> Credential {
    Credential::CramMd5 {
        challenge: CRAM_CHALLENGE.into(),
        digest: Secret::new(digest),
    }
}

#[tokio::test]
async fn passwords_are_checked() {
    let f = fixture();
    let principal = f
        .auth
        .authenticate(request("Alice@ACME.example", password("wonderland")))
        .await
        .unwrap();
    let tenant = TenantId::new("acme").unwrap();
    assert_eq!(principal.tenant, tenant);
    assert_eq!(principal.user, "u-alice");
    assert_eq!(principal.login, "alice@acme.example");
    assert_eq!(principal.maildrop.to_string(), "acme/u-alice");
    assert_eq!(principal.policy, Policy::default());
    assert!(!principal.policy.cleartext_allowed);

    for (login, pw) in [
        ("alice@acme.example", "wonderlanD"),
        ("nobody@acme.example", "wonderland"),
        ("alice@elsewhere.example", "wonderland"),
        ("../alice@acme.example", "wonderland"),
    ] {
        let result = f.auth.authenticate(request(login, password(pw))).await;
        assert_eq!(result, Err(AuthFailure::BadCredentials), "{login} {pw}");
    }
}

#[tokio::test]
async fn disabled_accounts_are_reported_only_to_who_knows_the_password() {
    let f = fixture();
    let right = f
        .auth
        .authenticate(request("mallory@acme.example", password("wonderland")))
        .await;
    assert!(matches!(right, Err(AuthFailure::Permanent(_))), "{right:?}");
    let wrong = f
        .auth
        .authenticate(request("mallory@acme.example", password("guess")))
        .await;
    assert_eq!(wrong, Err(AuthFailure::BadCredentials));
}

#[tokio::test]
async fn apop_follows_rfc_1939() {
    let f = fixture();
    assert!(f.auth.apop_offered());
    let principal = f
        .auth
        .authenticate(request("dave@strict.example", apop(RFC_DIGEST)))
        .await
        .unwrap();
    assert_eq!(principal.user, "u-dave");
    assert_eq!(principal.policy.login_delay, Duration::from_secs(60));
    assert!(!principal.policy.cleartext_allowed);

    let wrong = "00000000000000000000000000000000";
    for (login, digest) in [
        ("dave@strict.example", wrong),
        // alice has no APOP secret: even the right digest for some secret fails.
        ("alice@acme.example", RFC_DIGEST),
        ("nobody@acme.example", RFC_DIGEST),
    ] {
        let result = f.auth.authenticate(request(login, apop(digest))).await;
        assert_eq!(result, Err(AuthFailure::BadCredentials), "{login}");
    }
}

#[tokio::test]
async fn apop_is_offered_only_when_some_user_has_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.toml");
    replace_file(
        &path,
        "[[tenants]]\nid = \"t\"\ndomains = [\"t.example\"]\n",
    );
    assert!(!DirectoryAuthenticator::open(&path).unwrap().apop_offered());
}

#[tokio::test]
async fn login_delay_refuses_a_second_login_too_soon() {
    let f = fixture();
    let dave = || request("dave@strict.example", apop(RFC_DIGEST));
    // A failed attempt is not a login and starts no delay.
    let failed = f
        .auth
        .authenticate(request("dave@strict.example", apop("0")))
        .await;
    assert_eq!(failed, Err(AuthFailure::BadCredentials));
    assert!(f.auth.authenticate(dave()).await.is_ok());
    assert_eq!(
        f.auth.authenticate(dave()).await,
        Err(AuthFailure::LoginTooSoon)
    );
    // Other users are not affected (alice's tenant has no delay).
    let alice = f
        .auth
        .authenticate(request("alice@acme.example", password("wonderland")))
        .await;
    assert!(alice.is_ok());
}

#[tokio::test]
async fn cleartext_passwords_need_tls_unless_the_tenant_allows_them() {
    let f = fixture();
    let without_tls = |login: &str, credential| AuthRequest {
        tls: false,
        ..request(login, credential)
    };
    // "strict" forbids cleartext explicitly, "acme" by default. Refused before the password
    // is checked: the same answer for right and wrong passwords, and for unknown users.
    for login in [
        "dave@strict.example",
        "alice@acme.example",
        "nobody@acme.example",
    ] {
        for pw in ["wonderland", "wrong"] {
            let result = f.auth.authenticate(without_tls(login, password(pw))).await;
            assert_eq!(result, Err(AuthFailure::EncryptionRequired), "{login} {pw}");
        }
    }
    // With TLS the password is checked as usual.
    let right = f
        .auth
        .authenticate(request("alice@acme.example", password("wonderland")))
        .await;
    assert!(right.is_ok(), "{right:?}");
    let wrong = f
        .auth
        .authenticate(request("alice@acme.example", password("wrong")))
        .await;
    assert_eq!(wrong, Err(AuthFailure::BadCredentials));
    // A tenant that opts in takes passwords without TLS.
    let open = f
        .auth
        .authenticate(without_tls("tim@open.example", password("wonderland")))
        .await;
    assert!(open.is_ok(), "{open:?}");
    assert!(open.unwrap().policy.cleartext_allowed);
    // APOP and CRAM-MD5 never send the secret: allowed without TLS.
    let apop_plain = f
        .auth
        .authenticate(without_tls("dave@strict.example", apop(RFC_DIGEST)))
        .await;
    assert!(apop_plain.is_ok(), "{apop_plain:?}");
    assert_eq!(
        AuthFailure::EncryptionRequired.to_string(),
        "cleartext credentials need TLS"
    );
}

#[tokio::test]
async fn cram_md5_follows_rfc_2195() {
    let f = fixture();
    assert!(f.auth.cram_md5_offered());
    let principal = f
        .auth
        .authenticate(AuthRequest {
            tls: false,
            ..request("tim@open.example", cram(CRAM_DIGEST))
        })
        .await
        .unwrap();
    assert_eq!(principal.user, "u-tim");
    let upper = f
        .auth
        .authenticate(request(
            "TIM@open.example",
            cram(&CRAM_DIGEST.to_uppercase()),
        ))
        .await;
    assert!(upper.is_ok(), "{upper:?}");

    let wrong = "00000000000000000000000000000000";
    for (login, digest) in [
        ("tim@open.example", wrong),
        ("tim@open.example", ""),
        // dave has an APOP secret but no CRAM-MD5 secret; alice has neither.
        ("dave@strict.example", CRAM_DIGEST),
        ("alice@acme.example", CRAM_DIGEST),
        ("nobody@open.example", CRAM_DIGEST),
        ("tim", CRAM_DIGEST),
    ] {
        let result = f.auth.authenticate(request(login, cram(digest))).await;
        assert_eq!(result, Err(AuthFailure::BadCredentials), "{login}");
    }
    // The APOP secret is not a CRAM-MD5 secret, nor the other way round.
    let apop_still_works = f
        .auth
        .authenticate(request("dave@strict.example", apop(RFC_DIGEST)))
        .await;
    assert!(apop_still_works.is_ok());
    let cram_secret_as_apop = f
        .auth
        .authenticate(request("tim@open.example", apop(RFC_DIGEST)))
        .await;
    assert_eq!(cram_secret_as_apop, Err(AuthFailure::BadCredentials));
}

#[tokio::test]
async fn cram_md5_is_offered_only_when_some_user_has_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.toml");
    replace_file(
        &path,
        "[[tenants]]\nid = \"t\"\ndomains = [\"t.example\"]\n",
    );
    assert!(
        !DirectoryAuthenticator::open(&path)
            .unwrap()
            .cram_md5_offered()
    );
}

#[tokio::test]
async fn recipients_resolve_including_disabled_users() {
    let f = fixture();
    let alice = f
        .auth
        .lookup_recipient("ALICE@acme.example")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(alice.maildrop.to_string(), "acme/u-alice");
    let mallory = f
        .auth
        .lookup_recipient("mallory@acme.example")
        .await
        .unwrap();
    assert_eq!(mallory.unwrap().user, "u-mallory");
    for unknown in [
        "nobody@acme.example",
        "alice@elsewhere.example",
        "<alice@acme.example>",
        "",
    ] {
        assert_eq!(
            f.auth.lookup_recipient(unknown).await,
            Ok(None),
            "{unknown}"
        );
    }
}

#[tokio::test]
async fn the_reloader_picks_up_a_changed_file() {
    let f = fixture();
    let shutdown = CancellationToken::new();
    let reloader = f
        .auth
        .spawn_reloader(Duration::from_millis(10), shutdown.clone());

    let new_hash = PasswordDigest::hash(b"looking-glass").unwrap();
    let bob = "[[users]]\nlogin = \"bob@acme.example\"\nid = \"u-bob\"\npassword = \"";
    let text = directory_text(
        new_hash.as_phc(),
        &format!("{bob}{}\"\n", new_hash.as_phc()),
    );
    replace_file(&f.path, &text);

    let bob = Login::parse("bob@acme.example").unwrap();
    let deadline = TokioInstant::now() + Duration::from_secs(10);
    while f.auth.directory().user(&bob).is_none() {
        assert!(TokioInstant::now() < deadline, "directory not reloaded");
        sleep(Duration::from_millis(10)).await;
    }
    let new = f
        .auth
        .authenticate(request("alice@acme.example", password("looking-glass")))
        .await;
    assert!(new.is_ok(), "{new:?}");

    shutdown.cancel();
    reloader.await.unwrap();
}

#[tokio::test]
async fn a_bad_or_vanished_file_keeps_the_old_directory() {
    let f = fixture();
    replace_file(&f.path, "[[users]]\nlogin = \"x@unknown.example\"\n");
    assert!(matches!(
        reload(&f.auth),
        Err(DirectoryError::Syntax { .. })
    ));
    std::fs::remove_file(&f.path).unwrap();
    assert!(matches!(
        reload(&f.auth),
        Err(DirectoryError::Vanished { .. })
    ));
    assert!(
        matches!(f.auth.reload_if_changed(), Ok(false)),
        "warned twice"
    );

    let dave = f
        .auth
        .authenticate(request("dave@strict.example", apop(RFC_DIGEST)))
        .await;
    assert!(dave.is_ok(), "{dave:?}");
}

#[test]
fn reloads_are_counted_by_outcome() {
    let f = fixture();
    let registry = prometheus::Registry::new();
    let metrics = ReloadMetrics::new(&registry).unwrap();
    f.auth.count_reloads(metrics.clone());
    assert!(matches!(f.auth.reload_if_changed(), Ok(false)));
    replace_file(&f.path, "[[users]]\nlogin = \"x@unknown.example\"\n");
    assert!(reload(&f.auth).is_err());
    assert_eq!(metrics.refused.get(), 1);
    replace_file(&f.path, &directory_text(&WONDERLAND, "\n"));
    assert!(matches!(reload(&f.auth), Ok(true)));
    assert_eq!(metrics.refused.get(), 0);
    replace_file(&f.path, "");
    assert!(matches!(
        reload(&f.auth),
        Err(DirectoryError::TooManyRemovals { .. })
    ));
    assert_eq!(metrics.success.get(), 1);
    assert_eq!(metrics.failure.get(), 1);
    assert_eq!(metrics.removal_refused.get(), 1);
    assert_eq!(metrics.refused.get(), 1);
}

#[tokio::test]
async fn a_changed_password_takes_effect_at_reload_despite_the_cache() {
    let f = fixture();
    let login = |secret: &'static str| {
        let auth = f.auth.clone();
        async move {
            auth.authenticate(request("alice@acme.example", password(secret)))
                .await
        }
    };
    // Verified twice: the second answer comes from the cache.
    assert!(login("wonderland").await.is_ok());
    assert!(login("wonderland").await.is_ok());

    let changed = PasswordDigest::hash(b"looking-glass").unwrap();
    replace_file(&f.path, &directory_text(changed.as_phc(), ""));
    assert!(matches!(reload(&f.auth), Ok(true)));
    assert!(matches!(
        login("wonderland").await,
        Err(AuthFailure::BadCredentials)
    ));
    assert!(login("looking-glass").await.is_ok());
}

/// The fixture's text without the users named.
fn without(logins: &[&str]) -> String {
    let text = directory_text(&WONDERLAND, "");
    let mut kept = Vec::new();
    for entry in text.split("\n[[users]]\n") {
        if !logins
            .iter()
            .any(|l| entry.contains(&format!("login = \"{l}\"")))
        {
            kept.push(entry);
        }
    }
    kept.join("\n[[users]]\n")
}

async fn is_user(auth: &DirectoryAuthenticator, address: &str) -> Result<bool, LookupError> {
    auth.lookup_recipient(address).await.map(|p| p.is_some())
}

#[tokio::test]
async fn an_emptied_file_is_refused_and_unknown_recipients_are_in_doubt() {
    let f = fixture();
    assert_eq!(is_user(&f.auth, "nobody@acme.example").await, Ok(false));
    for emptied in ["", "# users are being edited\n"] {
        replace_file(&f.path, emptied);
        // Seen once: not taken yet, and unknown recipients are not refused for good.
        assert!(matches!(f.auth.reload_if_changed(), Ok(false)));
        assert_eq!(
            is_user(&f.auth, "nobody@acme.example").await,
            Err(LookupError::DirectoryInDoubt)
        );
        let error = f.auth.reload_if_changed().unwrap_err();
        assert!(
            matches!(
                error,
                DirectoryError::TooManyRemovals {
                    removed: 4,
                    in_use: 4,
                    ..
                }
            ),
            "{error}"
        );
        assert!(
            matches!(f.auth.reload_if_changed(), Ok(false)),
            "reported twice"
        );
        assert_eq!(is_user(&f.auth, "alice@acme.example").await, Ok(true));
        assert_eq!(
            is_user(&f.auth, "nobody@acme.example").await,
            Err(LookupError::DirectoryInDoubt)
        );
        let alice = f
            .auth
            .authenticate(request("alice@acme.example", password("wonderland")))
            .await;
        assert!(alice.is_ok(), "{alice:?}");
    }
    // The version in use is back: unknown recipients are unknown again.
    replace_file(&f.path, &directory_text(&WONDERLAND, ""));
    assert!(matches!(f.auth.reload_if_changed(), Ok(false)));
    assert_eq!(is_user(&f.auth, "nobody@acme.example").await, Ok(false));
}

#[tokio::test]
async fn removals_within_the_limit_are_taken() {
    let f = fixture();
    replace_file(
        &f.path,
        &without(&["alice@acme.example", "tim@open.example"]),
    );
    assert!(matches!(reload(&f.auth), Ok(true)), "half of the users");
    assert_eq!(is_user(&f.auth, "alice@acme.example").await, Ok(false));
    replace_file(
        &f.path,
        &without(&[
            "alice@acme.example",
            "tim@open.example",
            "dave@strict.example",
        ]),
    );
    assert!(matches!(reload(&f.auth), Ok(true)), "one of two");
    replace_file(
        &f.path,
        &without(&[
            "alice@acme.example",
            "tim@open.example",
            "dave@strict.example",
            "mallory@acme.example",
        ]),
    );
    assert!(
        matches!(reload(&f.auth), Err(DirectoryError::TooManyRemovals { .. })),
        "the last one"
    );
}

#[tokio::test]
async fn the_limit_is_configurable() {
    let f = fixture();
    f.auth.limit_removals(RemovalLimit::new(0.0).unwrap());
    replace_file(&f.path, &without(&["alice@acme.example"]));
    assert!(matches!(
        reload(&f.auth),
        Err(DirectoryError::TooManyRemovals { .. })
    ));
    let f = fixture();
    f.auth.limit_removals(RemovalLimit::new(1.0).unwrap());
    replace_file(&f.path, "");
    assert!(matches!(reload(&f.auth), Ok(true)));
    assert_eq!(
        is_user(&f.auth, "alice@acme.example").await,
        Err(LookupError::DirectoryInDoubt)
    );
}

#[tokio::test]
async fn an_approved_version_is_taken_once() {
    let f = fixture();
    replace_file(&f.path, "# nobody\n");
    assert!(reload(&f.auth).is_err());
    let approved = Directory::approve_removals(&f.path).unwrap();
    assert!(approved.users().is_empty());
    assert!(matches!(reload(&f.auth), Ok(true)));
    assert!(f.auth.directory().users().is_empty());
    // With no users at all, unknown recipients are still not refused for good.
    assert_eq!(
        is_user(&f.auth, "alice@acme.example").await,
        Err(LookupError::DirectoryInDoubt)
    );

    // The approval named that version only.
    replace_file(&f.path, &directory_text(&WONDERLAND, ""));
    assert!(matches!(reload(&f.auth), Ok(true)));
    replace_file(&f.path, "# nobody again\n");
    assert!(reload(&f.auth).is_err());
}

#[tokio::test]
async fn edits_that_remove_users_are_approved() {
    let f = fixture();
    for login in [
        "alice@acme.example",
        "tim@open.example",
        "dave@strict.example",
        "mallory@acme.example",
    ] {
        let (mut directory, edit) = Directory::load_for_edit(&f.path).unwrap();
        directory
            .remove_user(&Login::parse(login).unwrap())
            .unwrap();
        edit.save(&directory).unwrap();
    }
    // Four removals at once, all made by edits.
    assert!(matches!(reload(&f.auth), Ok(true)));
    assert!(f.auth.directory().users().is_empty());

    // An edit that removes nothing approves nothing, even of a file someone else emptied.
    let f = fixture();
    replace_file(&f.path, "");
    let (mut directory, edit) = Directory::load_for_edit(&f.path).unwrap();
    let tenant = TenantId::new("other").unwrap();
    directory.add_tenant(tenant, ["other.example"]).unwrap();
    edit.save(&directory).unwrap();
    assert!(matches!(
        reload(&f.auth),
        Err(DirectoryError::TooManyRemovals { .. })
    ));
}

#[cfg(unix)]
#[tokio::test]
async fn a_fifo_is_refused_and_a_later_file_taken() {
    let f = fixture();
    std::fs::remove_file(&f.path).unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(&f.path)
        .status()
        .unwrap();
    assert!(status.success());
    // Would block forever if the FIFO were opened for a blocking read.
    let error = reload(&f.auth).unwrap_err();
    assert!(
        matches!(error, DirectoryError::NotRegularFile { kind: "FIFO", .. }),
        "{error}"
    );
    assert_eq!(is_user(&f.auth, "alice@acme.example").await, Ok(true));
    std::fs::remove_file(&f.path).unwrap();
    replace_file(&f.path, &directory_text(&WONDERLAND, "\n"));
    assert!(matches!(reload(&f.auth), Ok(true)));
}

#[tokio::test]
async fn an_empty_file_at_start_leaves_recipients_in_doubt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.toml");
    std::fs::write(&path, "").unwrap();
    let auth = DirectoryAuthenticator::open(&path).unwrap();
    assert_eq!(
        is_user(&auth, "alice@acme.example").await,
        Err(LookupError::DirectoryInDoubt)
    );
    replace_file(&path, &directory_text(&WONDERLAND, ""));
    assert!(matches!(reload(&auth), Ok(true)));
    assert_eq!(is_user(&auth, "nobody@acme.example").await, Ok(false));
}
