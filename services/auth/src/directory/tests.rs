use std::fs;

use super::*;

fn login(s: &str) -> Login {
    Login::parse(s).unwrap()
}

fn tenant(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

/// A valid argon2id hash that costs nothing to produce (no test here verifies against it).
fn phc() -> String {
    PasswordDigest::dummy().as_phc().to_owned()
}

fn parse(text: &str) -> Result<Directory, DirectoryError> {
    Directory::from_text(Path::new("users.toml"), text)
}

const TENANTS: &str = r#"
[[tenants]]
id = "acme"
domains = ["acme.example", "ACME.test"]
[tenants.policy]
login_delay_secs = 30
expire_days = 7
cleartext_allowed = false

[[tenants]]
id = "other"
"#;

fn with_users(users: &str) -> String {
    format!("{TENANTS}\n{users}")
}

fn user(login: &str, id: &str) -> String {
    format!(
        "[[users]]\nlogin = \"{login}\"\nid = \"{id}\"\npassword = \"{}\"\n",
        phc()
    )
}

#[test]
fn a_missing_file_is_an_empty_directory() {
    let dir = tempfile::tempdir().unwrap();
    let directory = Directory::load(dir.path().join("absent.toml")).unwrap();
    assert!(directory.tenants().is_empty());
    assert!(directory.users().is_empty());
}

#[test]
fn loads_tenants_policies_and_users() {
    let text = with_users(&format!(
        "{}apop_secret = \"tanstaaf\"\ncram_secret = \"tanstaaftanstaaf\"\ndisabled = true\n",
        user("Alice@ACME.example", "u-1")
    ));
    let directory = parse(&text).unwrap();
    let tenants = directory.tenants();
    assert_eq!(tenants[0].id, tenant("acme"));
    assert_eq!(tenants[0].domains, ["acme.example", "acme.test"]);
    assert_eq!(
        tenants[0].policy,
        Policy {
            login_delay: Duration::from_secs(30),
            expire_days: Some(7),
            cleartext_allowed: false
        }
    );
    // No policy table: the defaults, and no cleartext credentials without TLS.
    assert_eq!(tenants[1].policy, Policy::default());
    assert!(!tenants[1].policy.cleartext_allowed);
    let users = directory.users();
    assert_eq!(
        users,
        [UserInfo {
            login: login("alice@acme.example"),
            id: UserId::new("u-1").unwrap(),
            tenant: tenant("acme"),
            disabled: true,
            has_apop_secret: true,
            has_cram_secret: true,
        }]
    );
    assert_eq!(users[0].login.to_string(), "Alice@acme.example");
    assert!(directory.has_apop_secrets());
    assert!(directory.has_cram_secrets());
    let debug = format!("{users:?} {directory:?}");
    assert!(
        !debug.contains("argon2") && !debug.contains("tanstaaf"),
        "{debug}"
    );
    let user = directory.users.get("alice@acme.example").unwrap();
    assert_eq!(format!("{:?}", user.cram_secret), "Some(CramSecret(..))");
}

#[test]
fn refuses_invalid_files() {
    type Check = fn(&DirectoryError) -> bool;
    let cases: Vec<(String, Check)> = vec![
        ("[[tenants]]\nid = \"Acme\"\n".into(), |e| {
            matches!(e, DirectoryError::InvalidTenantId { .. })
        }),
        ("[[tenants]]\nid = \"a\"\n[[tenants]]\nid = \"a\"\n".into(), |e| {
            matches!(e, DirectoryError::DuplicateTenant(_))
        }),
        ("[[tenants]]\nid = \"a\"\ndomains = [\"x..y\"]\n".into(), |e| {
            matches!(e, DirectoryError::InvalidDomain { .. })
        }),
        ("[[tenants]]\nid = \"a\"\ndomains = [\"x.y\"]\n[[tenants]]\nid = \"b\"\ndomains = [\"X.y\"]\n"
            .into(), |e| matches!(e, DirectoryError::DomainTaken { .. })),
        ("[[tenants]]\nid = \"a\"\ncolour = \"red\"\n".into(), |e| {
            matches!(e, DirectoryError::Syntax { .. })
        }),
        (with_users(&user("a@nowhere.example", "u-1")), |e| {
            matches!(e, DirectoryError::UnknownDomain { .. })
        }),
        (with_users(&user("../a@acme.example", "u-1")), |e| {
            matches!(e, DirectoryError::InvalidLogin { .. })
        }),
        (with_users(&user("a@acme.example", "../u")), |e| {
            matches!(e, DirectoryError::InvalidUserId { .. })
        }),
        (with_users(&(user("a@acme.example", "u-1") + &user("A@acme.EXAMPLE", "u-2"))), |e| {
            matches!(e, DirectoryError::DuplicateUser { .. })
        }),
        (with_users(&(user("a@acme.example", "u-1") + &user("b@acme.test", "u-1"))), |e| {
            matches!(e, DirectoryError::DuplicateUserId { .. })
        }),
        (with_users("[[users]]\nlogin = \"a@acme.example\"\nid = \"u\"\npassword = \"hunter2\"\n"), |e| {
            matches!(e, DirectoryError::InvalidPasswordHash { .. })
        }),
        (with_users(&(user("a@acme.example", "u-1") + "apop_secret = \"\"\n")), |e| {
            matches!(e, DirectoryError::InvalidApopSecret { .. })
        }),
        (with_users(&(user("a@acme.example", "u-1") + "cram_secret = \"a\\u0000b\"\n")), |e| {
            matches!(e, DirectoryError::InvalidCramSecret { .. })
        }),
        (with_users(&(user("a@acme.example", "u-1") + "cram_secret = 42\n")), |e| {
            matches!(e, DirectoryError::Syntax { .. })
        }),
    ];
    for (text, check) in cases {
        match parse(&text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => {
                assert!(check(&e), "unexpected error {e:?} for\n{text}");
                let message = e.to_string();
                assert!(
                    !message.contains("$argon2") && !message.contains("hunter2"),
                    "{message}"
                );
            }
        }
    }
}

#[test]
fn edits_tenants_and_domains() {
    let mut directory = Directory::new();
    directory
        .add_tenant(tenant("acme"), ["acme.example"])
        .unwrap();
    directory
        .add_tenant(tenant("other"), Vec::<String>::new())
        .unwrap();
    assert!(matches!(
        directory.add_tenant(tenant("acme"), ["new.example"]),
        Err(DirectoryError::DuplicateTenant(_))
    ));
    assert!(matches!(
        directory.add_tenant(tenant("third"), ["fresh.example", "ACME.example"]),
        Err(DirectoryError::DomainTaken { .. })
    ));
    assert!(
        directory.tenant_for_domain("fresh.example").is_none(),
        "half-added tenant"
    );
    directory
        .add_domain(&tenant("other"), "Other.Example")
        .unwrap();
    directory
        .add_domain(&tenant("other"), "other.example")
        .unwrap();
    assert!(matches!(
        directory.add_domain(&tenant("other"), "acme.example"),
        Err(DirectoryError::DomainTaken { .. })
    ));
    assert!(matches!(
        directory.add_domain(&tenant("nobody"), "n.example"),
        Err(DirectoryError::UnknownTenant(_))
    ));
    assert!(matches!(
        directory.add_domain(&tenant("other"), "bad_domain"),
        Err(DirectoryError::InvalidDomain { .. })
    ));
    assert_eq!(
        directory.tenant_for_domain("OTHER.example").unwrap().id,
        tenant("other")
    );
    assert_eq!(directory.tenants()[1].domains, ["other.example"]);
}

#[test]
fn edits_users() {
    let mut directory = parse(&with_users(&user("bob@acme.example", "u-bob"))).unwrap();
    let bob = login("BOB@acme.example");
    let secret = Secret::new("tanstaaf");
    directory.set_apop_secret(&bob, Some(&secret)).unwrap();
    directory.set_disabled(&bob, true).unwrap();
    let info = directory.user(&bob).unwrap();
    assert!(info.has_apop_secret && info.disabled);
    assert!(matches!(
        directory.set_apop_secret(&bob, Some(&Secret::new("a\nb"))),
        Err(DirectoryError::InvalidApopSecret { .. })
    ));
    directory.set_apop_secret(&bob, None).unwrap();
    assert!(!directory.has_apop_secrets());

    let cram = Secret::new("tanstaaftanstaaf");
    directory.set_cram_secret(&bob, Some(&cram)).unwrap();
    assert!(directory.user(&bob).unwrap().has_cram_secret);
    assert!(directory.has_cram_secrets());
    assert!(matches!(
        directory.set_cram_secret(&bob, Some(&Secret::new(""))),
        Err(DirectoryError::InvalidCramSecret { .. })
    ));
    directory.set_cram_secret(&bob, None).unwrap();
    assert!(!directory.has_cram_secrets());
    assert!(matches!(
        directory.set_cram_secret(&login("nobody@acme.example"), Some(&cram)),
        Err(DirectoryError::UnknownUser { .. })
    ));

    let nobody = login("nobody@acme.example");
    assert!(matches!(
        directory.set_disabled(&nobody, true),
        Err(DirectoryError::UnknownUser { .. })
    ));
    assert!(matches!(
        directory.add_user(&login("x@elsewhere.example"), &Secret::new("pw")),
        Err(DirectoryError::UnknownDomain { domain }) if domain == "elsewhere.example"
    ));
    assert!(matches!(
        directory.add_user(&bob, &Secret::new("pw")),
        Err(DirectoryError::DuplicateUser { .. })
    ));
    assert!(matches!(
        directory.add_user(&nobody, &Secret::new("")),
        Err(DirectoryError::EmptyPassword)
    ));

    assert_eq!(directory.remove_user(&bob).unwrap().as_str(), "u-bob");
    assert!(directory.user(&bob).is_none());
    assert!(matches!(
        directory.remove_user(&bob),
        Err(DirectoryError::UnknownUser { .. })
    ));
}

#[cfg(unix)]
#[test]
fn saves_and_loads_the_same_directory() {
    use std::os::unix::fs::PermissionsExt;

    let mut directory = parse(&with_users(&user("bob@acme.example", "u-bob"))).unwrap();
    let carol = login("Carol@acme.test");
    let id = directory.add_user(&carol, &Secret::new("s3cret")).unwrap();
    assert!(
        id.as_str().starts_with("u-") && id.as_str().len() == 18,
        "{id}"
    );
    assert!(
        id.as_str()[2..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    directory
        .set_apop_secret(&carol, Some(&Secret::new("tanstaaf")))
        .unwrap();
    directory
        .set_cram_secret(&carol, Some(&Secret::new("tanstaaftanstaaf")))
        .unwrap();
    directory
        .set_disabled(&login("bob@acme.example"), true)
        .unwrap();
    // A tenant that opts in to cleartext keeps saying so.
    let open = Policy {
        cleartext_allowed: true,
        ..Policy::default()
    };
    directory
        .set_policy(&tenant("other"), open.clone())
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.toml");
    directory.save(&path).unwrap();
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let loaded = Directory::load(&path).unwrap();
    assert_eq!(loaded.tenants(), directory.tenants());
    assert_eq!(loaded.users(), directory.users());
    let user = loaded.users.get(&carol.key()).unwrap();
    assert!(user.password.verify(b"s3cret"));
    assert_eq!(user.apop_secret.as_ref().unwrap().as_str(), "tanstaaf");
    assert_eq!(
        user.cram_secret.as_ref().unwrap().as_str(),
        "tanstaaftanstaaf"
    );
    assert!(loaded.user(&carol).unwrap().has_cram_secret);
    let policies: Vec<_> = loaded.tenants().into_iter().map(|t| t.policy).collect();
    assert!(!policies[0].cleartext_allowed);
    assert_eq!(policies[1], open);
    // Both values are written out, not left to the default.
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains("cleartext_allowed = false"), "{text}");
    assert!(text.contains("cleartext_allowed = true"), "{text}");
    // Saving what was loaded gives the same bytes: the format is stable.
    let path2 = dir.path().join("users2.toml");
    loaded.save(&path2).unwrap();
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        fs::read_to_string(&path2).unwrap()
    );
}
