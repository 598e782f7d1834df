//! The SASL exchanges of POP3 AUTH (`cloudpop_pop3::sasl`), with every client response
//! carried through the command decoder as base64, as on the wire.
//!
//! Input: 2 parameter bytes (mechanism, flags), then parts separated by 0xFF.
//! - Flags bit 1 clear: the parts are the raw responses (the first one is the initial
//!   response if bit 0 is set). Checked: an exchange sends at most two challenges, and a
//!   credential it yields has the shape of its mechanism (a non-empty login without NUL for
//!   PLAIN, the issued challenge and a 32-byte digest for CRAM-MD5, a non-empty bearer
//!   token without 0x01 for OAUTHBEARER and XOAUTH2).
//! - Flags bit 1 set: the first two parts are a login and a secret, written as a well-formed
//!   response of the mechanism (the client's encoder, RFC 4616, 2195, 7628 and XOAUTH2).
//!   Checked: the exchange yields exactly that login and secret.
//! - Always: base64 responses and `AUTH` lines decode back to the bytes that were encoded.

#![no_main]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::BytesMut;
use cloudpop_auth::{BearerScheme, Credential, Secret};
use cloudpop_fuzz::Input;
use cloudpop_pop3::codec::SaslResponse;
use cloudpop_pop3::sasl::{self, Mechanism, Pending, Step};
use cloudpop_pop3::{Command, Decoder};
use libfuzzer_sys::fuzz_target;

const CHALLENGE: &str = "<1896.697170952@fuzz.example>";

/// A bearer token: non-empty, and free of the 0x01 that separates key/value pairs.
fn is_token(bytes: &[u8]) -> bool {
    !bytes.is_empty() && !bytes.contains(&0x01)
}

fuzz_target!(|data: &[u8]| {
    let input = Input::new(data, 2);
    let mechanism = Mechanism::ALL[usize::from(input.byte(0)) % Mechanism::ALL.len()];
    let flags = input.byte(1);
    let parts: Vec<&[u8]> = input.payload().split(|&b| b == 0xff).collect();
    if flags & 2 == 0 {
        let with_initial = flags & 1 != 0;
        let (initial, responses) = match parts.split_first() {
            Some((first, rest)) if with_initial => (Some(*first), rest),
            _ => (None, &parts[..]),
        };
        raw_exchange(mechanism, initial, responses);
    } else if let [login, secret, ..] = parts[..] {
        well_formed_exchange(mechanism, flags, login, secret);
    }
    // RFC 7628 §3.2.3: after an error challenge, any response ends the exchange.
    let after_failure = sasl::next(Pending::BearerFailed, Secret::new(input.payload()));
    assert!(matches!(after_failure, Step::Refused));
});

/// Runs an exchange with whatever the client sends; returns the final step.
fn run(mechanism: Mechanism, initial: Option<&[u8]>, responses: &[&[u8]]) -> Step {
    let initial = initial.map(|bytes| through_auth_line(mechanism, bytes));
    let mut step = sasl::start(mechanism, initial, CHALLENGE.to_owned());
    let mut responses = responses.iter();
    let mut challenges = 0;
    while let Step::Challenge(_, pending) = step {
        challenges += 1;
        assert!(
            challenges <= 2,
            "{} sent a third challenge",
            mechanism.name()
        );
        let Some(response) = responses.next() else {
            return Step::Challenge(Vec::new(), pending);
        };
        step = sasl::next(pending, through_sasl_line(response));
    }
    step
}

fn raw_exchange(mechanism: Mechanism, initial: Option<&[u8]>, responses: &[&[u8]]) {
    let Step::Check { login, credential } = run(mechanism, initial, responses) else {
        return;
    };
    match (mechanism, credential) {
        (Mechanism::Plain, Credential::Password(_)) => {
            assert!(!login.is_empty() && !login.contains('\0'), "{login:?}");
        }
        (Mechanism::Login, Credential::Password(_)) => assert!(!login.is_empty()),
        (Mechanism::CramMd5, Credential::CramMd5 { challenge, digest }) => {
            assert!(!login.is_empty());
            assert_eq!(challenge, CHALLENGE);
            assert_eq!(digest.expose().len(), 32);
        }
        (Mechanism::OAuthBearer, Credential::Bearer { token, scheme }) => {
            assert_eq!(scheme, BearerScheme::OAuthBearer);
            assert!(is_token(token.expose()));
        }
        (Mechanism::XOAuth2, Credential::Bearer { token, scheme }) => {
            assert_eq!(scheme, BearerScheme::XOAuth2);
            assert!(is_token(token.expose()));
            assert!(!login.contains('\u{1}'));
        }
        (mechanism, credential) => {
            panic!("{} yielded {credential:?}", mechanism.name())
        }
    }
}

/// Writes `login` and `secret` as a client of `mechanism` would, and checks the exchange
/// reads them back, whenever they are valid for the mechanism.
fn well_formed_exchange(mechanism: Mechanism, flags: u8, login: &[u8], secret: &[u8]) {
    let Ok(login) = std::str::from_utf8(login) else {
        return;
    };
    let initial = flags & 1 != 0;
    let (responses, want): (Vec<Vec<u8>>, Credential) = match mechanism {
        // RFC 4616 §2: [authzid] NUL authcid NUL passwd; authzid empty or the same login.
        Mechanism::Plain => {
            if login.is_empty() || login.contains('\0') {
                return;
            }
            let authzid = if flags & 4 != 0 { login } else { "" };
            let response = [authzid.as_bytes(), b"\0", login.as_bytes(), b"\0", secret].concat();
            (vec![response], Credential::Password(Secret::new(secret)))
        }
        Mechanism::Login => {
            if login.is_empty() {
                return;
            }
            let responses = vec![login.as_bytes().to_vec(), secret.to_vec()];
            (responses, Credential::Password(Secret::new(secret)))
        }
        // RFC 2195 §2: the user name, a space, and 32 lower-case hex digits.
        Mechanism::CramMd5 => {
            if login.is_empty() {
                return;
            }
            let digest: String = (0..16)
                .map(|i| format!("{:02x}", secret.get(i).copied().unwrap_or(0)))
                .collect();
            let want = Credential::CramMd5 {
                challenge: CHALLENGE.to_owned(),
                digest: Secret::new(digest.as_bytes()),
            };
            (vec![format!("{login} {digest}").into_bytes()], want)
        }
        // RFC 7628 §3.1, with RFC 5801 §4's escaping of the authzid ("=" and ",").
        Mechanism::OAuthBearer => {
            if login.contains('\u{1}') || !is_token(secret) {
                return;
            }
            let authzid = if login.is_empty() {
                String::new()
            } else {
                format!("a={}", login.replace('=', "=3D").replace(',', "=2C"))
            };
            let host = if flags & 4 != 0 {
                "host=server.example.com\x01port=110\x01"
            } else {
                ""
            };
            let response = [
                format!("n,{authzid},\x01{host}auth=Bearer ").as_bytes(),
                secret,
                b"\x01\x01",
            ]
            .concat();
            let want = Credential::Bearer {
                token: Secret::new(secret),
                scheme: BearerScheme::OAuthBearer,
            };
            (vec![response], want)
        }
        Mechanism::XOAuth2 => {
            if login.contains('\u{1}') || !is_token(secret) {
                return;
            }
            let response = [
                format!("user={login}\x01auth=Bearer ").as_bytes(),
                secret,
                b"\x01\x01",
            ]
            .concat();
            let want = Credential::Bearer {
                token: Secret::new(secret),
                scheme: BearerScheme::XOAuth2,
            };
            (vec![response], want)
        }
    };
    let responses: Vec<&[u8]> = responses.iter().map(Vec::as_slice).collect();
    let step = match responses.split_first() {
        Some((first, rest)) if initial && mechanism != Mechanism::CramMd5 => {
            run(mechanism, Some(first), rest)
        }
        _ => run(mechanism, None, &responses),
    };
    match step {
        Step::Check {
            login: got,
            credential,
        } => {
            assert_eq!(got, login, "{}", mechanism.name());
            assert!(same_credential(&credential, &want), "{}", mechanism.name());
        }
        other => panic!(
            "{} refused a well-formed response: {other:?}",
            mechanism.name()
        ),
    }
}

fn same_credential(got: &Credential, want: &Credential) -> bool {
    match (got, want) {
        (Credential::Password(a), Credential::Password(b)) => a == b,
        (
            Credential::CramMd5 {
                challenge: c1,
                digest: d1,
            },
            Credential::CramMd5 {
                challenge: c2,
                digest: d2,
            },
        ) => c1 == c2 && d1 == d2,
        (
            Credential::Bearer {
                token: t1,
                scheme: s1,
            },
            Credential::Bearer {
                token: t2,
                scheme: s2,
            },
        ) => t1 == t2 && s1 == s2,
        _ => false,
    }
}

/// A decoder with room for the longest line these inputs make.
fn decoder(content_len: usize) -> Decoder {
    Decoder::new(255).with_sasl_limit(64 + content_len * 4 / 3)
}

/// Sends `response` as a base64 line (RFC 5034 §4) and decodes it as the server does.
fn through_sasl_line(response: &[u8]) -> Secret {
    let line = format!("{}\r\n", STANDARD.encode(response));
    let mut buf = BytesMut::from(line.as_bytes());
    let decoded = decoder(response.len()).decode_sasl(&mut buf);
    assert!(buf.is_empty());
    match decoded {
        Ok(Some(SaslResponse::Data(secret))) => {
            assert_eq!(secret.expose(), response, "base64 round trip");
            secret
        }
        other => panic!("a base64 response decoded as {other:?}"),
    }
}

/// Sends `initial` in an `AUTH` line (`=` when empty, RFC 5034 §4) and decodes it.
fn through_auth_line(mechanism: Mechanism, initial: &[u8]) -> Secret {
    let encoded = if initial.is_empty() {
        "=".to_owned()
    } else {
        STANDARD.encode(initial)
    };
    let line = format!(
        "AUTH {} {encoded}\r\n",
        mechanism.name().to_ascii_lowercase()
    );
    let mut buf = BytesMut::from(line.as_bytes());
    match decoder(initial.len()).decode(&mut buf) {
        Ok(Some(Command::Auth {
            mechanism: Some(name),
            initial: Some(secret),
        })) => {
            assert_eq!(Mechanism::from_name(&name), Some(mechanism));
            assert_eq!(secret.expose(), initial, "initial response round trip");
            secret
        }
        other => panic!("{line:?} decoded as {other:?}"),
    }
}
