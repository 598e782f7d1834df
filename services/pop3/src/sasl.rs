//! SASL mechanisms of the POP3 AUTH command (RFC 5034), as pure state machines: responses
//! in, challenges or a credential out. No I/O, no secret checking (the authenticator does
//! that); this module only decodes what the client sent.

use cloudpop_auth::{BearerScheme, Credential, Secret};

/// A mechanism this server implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// RFC 4616.
    Plain,
    /// The de-facto LOGIN mechanism (draft-murchison-sasl-login).
    Login,
    /// RFC 2195.
    CramMd5,
    /// RFC 7628.
    OAuthBearer,
    /// Google's XOAUTH2, still used by many clients.
    XOAuth2,
}

impl Mechanism {
    /// Every mechanism, in the order CAPA lists them.
    pub const ALL: [Mechanism; 5] = [
        Mechanism::Plain,
        Mechanism::Login,
        Mechanism::CramMd5,
        Mechanism::OAuthBearer,
        Mechanism::XOAuth2,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
            Mechanism::CramMd5 => "CRAM-MD5",
            Mechanism::OAuthBearer => "OAUTHBEARER",
            Mechanism::XOAuth2 => "XOAUTH2",
        }
    }

    /// What is offered unless configured otherwise: everything but CRAM-MD5. CRAM-MD5
    /// needs a plaintext-equivalent secret per user, and clients that see it advertised
    /// (curl, mpop) choose it over PLAIN, so users without such a secret could not log in.
    pub const OFFERED_BY_DEFAULT: [Mechanism; 4] = [
        Mechanism::Plain,
        Mechanism::Login,
        Mechanism::OAuthBearer,
        Mechanism::XOAuth2,
    ];

    /// Looks a mechanism up by its (upper-case) name.
    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Whether the client sends a reusable secret (a password or a bearer token), which
    /// must not cross the network in clear.
    pub fn sends_cleartext_secret(self) -> bool {
        !matches!(self, Mechanism::CramMd5)
    }
}

/// Where an exchange stands.
#[derive(Debug)]
pub enum Step {
    /// Send this challenge (raw bytes; the codec base64-encodes it) and wait for a response.
    Challenge(Vec<u8>, Pending),
    /// The client proved nothing yet: check this login and credential.
    Check {
        login: String,
        credential: Credential,
    },
    /// The exchange failed before any check; answer `-ERR` with this reason.
    Fail(&'static str),
    /// The exchange ends as a failed authentication (`-ERR [AUTH]`): after a refused token.
    Refused,
}

/// What the exchange waits for.
#[derive(Debug)]
pub enum Pending {
    /// A first response for a mechanism that takes an initial response (the client sent none).
    Initial(Mechanism),
    /// LOGIN: the user name, then the password.
    LoginUser,
    LoginPassword {
        user: String,
    },
    /// CRAM-MD5: `user digest` for this challenge.
    CramMd5 {
        challenge: String,
    },
    /// RFC 7628 §3.2.3: after a bearer failure, the client's dummy response; then `-ERR`.
    BearerFailed,
}

/// Starts an exchange. `cram_challenge` is a fresh `<…@host>` string, used by CRAM-MD5.
pub fn start(mechanism: Mechanism, initial: Option<Secret>, cram_challenge: String) -> Step {
    match (mechanism, initial) {
        // RFC 2195: the server speaks first, so there is no initial response.
        (Mechanism::CramMd5, Some(_)) => Step::Fail("CRAM-MD5 takes no initial response"),
        (Mechanism::CramMd5, None) => Step::Challenge(
            cram_challenge.clone().into_bytes(),
            Pending::CramMd5 {
                challenge: cram_challenge,
            },
        ),
        (Mechanism::Login, None) => Step::Challenge(b"Username:".to_vec(), Pending::LoginUser),
        (Mechanism::Login, Some(user)) => login_user(user),
        (mechanism, None) => Step::Challenge(Vec::new(), Pending::Initial(mechanism)),
        (mechanism, Some(response)) => first_response(mechanism, response),
    }
}

/// Continues an exchange with the client's response.
pub fn next(pending: Pending, response: Secret) -> Step {
    match pending {
        Pending::Initial(mechanism) => first_response(mechanism, response),
        Pending::LoginUser => login_user(response),
        Pending::LoginPassword { user } => Step::Check {
            login: user,
            credential: Credential::Password(response),
        },
        Pending::CramMd5 { challenge } => cram_md5(challenge, response),
        Pending::BearerFailed => Step::Refused,
    }
}

fn first_response(mechanism: Mechanism, response: Secret) -> Step {
    match mechanism {
        Mechanism::Plain => plain(response),
        Mechanism::OAuthBearer => oauthbearer(response),
        Mechanism::XOAuth2 => xoauth2(response),
        Mechanism::Login => login_user(response),
        Mechanism::CramMd5 => Step::Fail("CRAM-MD5 takes no initial response"),
    }
}

fn text(secret: &Secret) -> Option<&str> {
    std::str::from_utf8(secret.expose()).ok()
}

fn login_user(user: Secret) -> Step {
    match text(&user) {
        Some(user) if !user.is_empty() => Step::Challenge(
            b"Password:".to_vec(),
            Pending::LoginPassword {
                user: user.to_owned(),
            },
        ),
        _ => Step::Fail("invalid user name"),
    }
}

/// RFC 4616 §2: `[authzid] NUL authcid NUL passwd`.
fn plain(response: Secret) -> Step {
    let mut parts = response.expose().splitn(3, |&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password)) = (parts.next(), parts.next(), parts.next())
    else {
        return Step::Fail("malformed PLAIN response");
    };
    let (Ok(authzid), Ok(authcid)) = (std::str::from_utf8(authzid), std::str::from_utf8(authcid))
    else {
        return Step::Fail("malformed PLAIN response");
    };
    // Acting as another user (proxy authorization) is not offered.
    if !authzid.is_empty() && authzid != authcid {
        return Step::Fail(
            "authorization identity must be empty or equal the authentication identity",
        );
    }
    if authcid.is_empty() {
        return Step::Fail("malformed PLAIN response");
    }
    Step::Check {
        login: authcid.to_owned(),
        credential: Credential::Password(Secret::new(password)),
    }
}

/// RFC 2195 §2: `user SP digest`, the digest being 32 lower-case hex digits.
fn cram_md5(challenge: String, response: Secret) -> Step {
    let Some((user, digest)) = text(&response).and_then(|t| t.rsplit_once(' ')) else {
        return Step::Fail("malformed CRAM-MD5 response");
    };
    if user.is_empty() || digest.len() != 32 {
        return Step::Fail("malformed CRAM-MD5 response");
    }
    Step::Check {
        login: user.to_owned(),
        credential: Credential::CramMd5 {
            challenge,
            digest: Secret::new(digest.as_bytes()),
        },
    }
}

const KV_SEPARATOR: u8 = 0x01;

/// RFC 7628 §3.1: `gs2-header kvsep *(kvpair kvsep) kvsep`, the token in `auth=Bearer …`.
fn oauthbearer(response: Secret) -> Step {
    let bytes = response.expose();
    let Some(header_end) = bytes.iter().position(|&b| b == KV_SEPARATOR) else {
        return Step::Fail("malformed OAUTHBEARER response");
    };
    let Ok(header) = std::str::from_utf8(&bytes[..header_end]) else {
        return Step::Fail("malformed OAUTHBEARER response");
    };
    // RFC 5801 §4: gs2-cb-flag "," [gs2-authzid] ","; channel binding is not offered.
    let mut fields = header.splitn(3, ',');
    let (Some(flag), Some(authzid), Some("")) = (fields.next(), fields.next(), fields.next())
    else {
        return Step::Fail("malformed OAUTHBEARER response");
    };
    if flag != "n" && flag != "y" {
        return Step::Fail("channel binding is not supported");
    }
    let login = match authzid.strip_prefix("a=") {
        Some(name) => name.replace("=2C", ",").replace("=3D", "="),
        None if authzid.is_empty() => String::new(),
        None => return Step::Fail("malformed OAUTHBEARER response"),
    };
    bearer(login, &bytes[header_end + 1..], BearerScheme::OAuthBearer)
}

/// XOAUTH2: `user=` login `^Aauth=Bearer ` token `^A^A`.
fn xoauth2(response: Secret) -> Step {
    let bytes = response.expose();
    let Some(rest) = bytes.strip_prefix(b"user=") else {
        return Step::Fail("malformed XOAUTH2 response");
    };
    let Some(end) = rest.iter().position(|&b| b == KV_SEPARATOR) else {
        return Step::Fail("malformed XOAUTH2 response");
    };
    let Ok(login) = std::str::from_utf8(&rest[..end]) else {
        return Step::Fail("malformed XOAUTH2 response");
    };
    bearer(login.to_owned(), &rest[end + 1..], BearerScheme::XOAuth2)
}

/// Finds `auth=Bearer <token>` among `key=value` pairs separated by 0x01.
fn bearer(login: String, pairs: &[u8], scheme: BearerScheme) -> Step {
    let token = pairs
        .split(|&b| b == KV_SEPARATOR)
        .find_map(|pair| pair.strip_prefix(b"auth="))
        .and_then(|value| {
            let scheme_len = b"Bearer ".len();
            (value.len() > scheme_len && value[..scheme_len].eq_ignore_ascii_case(b"Bearer "))
                .then(|| value[scheme_len..].to_vec())
        });
    match token {
        Some(token) => Step::Check {
            login,
            credential: Credential::Bearer {
                token: Secret::new(token),
                scheme,
            },
        },
        None => Step::Fail("no bearer token in the response"),
    }
}

/// RFC 7628 §3.2.2: the error challenge sent after a failed bearer token.
pub const BEARER_ERROR: &[u8] = br#"{"status":"invalid_token"}"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn check(step: Step) -> (String, Credential) {
        match step {
            Step::Check { login, credential } => (login, credential),
            other => panic!("expected a check, got {other:?}"),
        }
    }

    #[test]
    fn plain_with_and_without_authzid() {
        let (login, cred) = check(start(
            Mechanism::Plain,
            Some(Secret::new(&b"\0tim\0tanstaaf"[..])),
            String::new(),
        ));
        assert_eq!(login, "tim");
        assert!(matches!(cred, Credential::Password(p) if p.expose() == b"tanstaaf"));
        let (login, _) = check(start(
            Mechanism::Plain,
            Some(Secret::new(&b"tim\0tim\0pw"[..])),
            String::new(),
        ));
        assert_eq!(login, "tim");
        assert!(matches!(
            start(
                Mechanism::Plain,
                Some(Secret::new(&b"bob\0tim\0pw"[..])),
                String::new()
            ),
            Step::Fail(_)
        ));
        assert!(matches!(
            start(
                Mechanism::Plain,
                Some(Secret::new(&b"timpw"[..])),
                String::new()
            ),
            Step::Fail(_)
        ));
    }

    #[test]
    fn plain_without_initial_response_asks_for_it() {
        let Step::Challenge(challenge, pending) = start(Mechanism::Plain, None, String::new())
        else {
            panic!()
        };
        assert!(challenge.is_empty());
        let (login, _) = check(next(pending, Secret::new(&b"\0a@b\0pw"[..])));
        assert_eq!(login, "a@b");
    }

    #[test]
    fn login_asks_user_then_password() {
        let Step::Challenge(c1, p1) = start(Mechanism::Login, None, String::new()) else {
            panic!()
        };
        assert_eq!(c1, b"Username:");
        let Step::Challenge(c2, p2) = next(p1, Secret::new(&b"a@b"[..])) else {
            panic!()
        };
        assert_eq!(c2, b"Password:");
        let (login, cred) = check(next(p2, Secret::new(&b"pw"[..])));
        assert_eq!(login, "a@b");
        assert!(matches!(cred, Credential::Password(p) if p.expose() == b"pw"));
    }

    #[test]
    fn cram_md5_follows_rfc_2195() {
        let challenge = "<1896.697170952@postoffice.reston.mci.net>".to_owned();
        let Step::Challenge(sent, pending) = start(Mechanism::CramMd5, None, challenge.clone())
        else {
            panic!()
        };
        assert_eq!(sent, challenge.as_bytes());
        let (login, cred) = check(next(
            pending,
            Secret::new(&b"tim b913a602c7eda7a495b4e6e7334d3890"[..]),
        ));
        assert_eq!(login, "tim");
        assert!(matches!(cred, Credential::CramMd5 { challenge: c, .. } if c == challenge));
        assert!(matches!(
            start(Mechanism::CramMd5, Some(Secret::new(&b"x"[..])), challenge),
            Step::Fail(_)
        ));
    }

    #[test]
    fn oauthbearer_follows_rfc_7628() {
        let msg = b"n,a=user@example.com,\x01host=server.example.com\x01port=110\x01auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01";
        let (login, cred) = check(start(
            Mechanism::OAuthBearer,
            Some(Secret::new(&msg[..])),
            String::new(),
        ));
        assert_eq!(login, "user@example.com");
        assert!(
            matches!(cred, Credential::Bearer { token, scheme: BearerScheme::OAuthBearer }
            if token.expose() == b"vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==")
        );
        let (login, _) = check(start(
            Mechanism::OAuthBearer,
            Some(Secret::new(&b"n,,\x01auth=Bearer t\x01\x01"[..])),
            String::new(),
        ));
        assert_eq!(login, "");
        assert!(matches!(
            start(
                Mechanism::OAuthBearer,
                Some(Secret::new(&b"p=tls-unique,,\x01auth=Bearer t\x01\x01"[..])),
                String::new()
            ),
            Step::Fail(_)
        ));
        assert!(matches!(
            start(
                Mechanism::OAuthBearer,
                Some(Secret::new(&b"n,,\x01host=x\x01\x01"[..])),
                String::new()
            ),
            Step::Fail(_)
        ));
    }

    #[test]
    fn xoauth2() {
        let msg = b"user=someuser@example.com\x01auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\x01\x01";
        let (login, cred) = check(start(
            Mechanism::XOAuth2,
            Some(Secret::new(&msg[..])),
            String::new(),
        ));
        assert_eq!(login, "someuser@example.com");
        assert!(matches!(
            cred,
            Credential::Bearer {
                scheme: BearerScheme::XOAuth2,
                ..
            }
        ));
    }
}
