//! POP URLs (RFC 2384), for telling a person how to connect.

use std::net::SocketAddr;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// RFC 2384 §4 `achar`: unreserved and a few safe characters stay; everything else is
/// %-encoded (notably `@`, `;` and `:`).
const USER_CHARS: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'!')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'$')
    .remove(b',')
    .remove(b'+')
    .remove(b'=');

/// `pop://<user>;AUTH=*@<host>:<port>`: any mechanism the server offers (RFC 2384 §3).
pub fn pop_url(login: &str, server: SocketAddr) -> String {
    let user = utf8_percent_encode(login, USER_CHARS);
    let host = match server {
        SocketAddr::V4(v4) => format!("{}:{}", display_host(&v4.ip().to_string()), v4.port()),
        SocketAddr::V6(v6) => format!("[{}]:{}", v6.ip(), v6.port()),
    };
    format!("pop://{user};AUTH=*@{host}")
}

fn display_host(ip: &str) -> String {
    // A wildcard listen address is not somewhere to connect to.
    if ip == "0.0.0.0" {
        "127.0.0.1".into()
    } else {
        ip.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_at_sign_of_the_login() {
        let server: SocketAddr = "127.0.0.1:1110".parse().unwrap();
        assert_eq!(
            pop_url("alice@example.com", server),
            "pop://alice%40example.com;AUTH=*@127.0.0.1:1110"
        );
        assert_eq!(
            pop_url("a;b:c@x", server),
            "pop://a%3Bb%3Ac%40x;AUTH=*@127.0.0.1:1110"
        );
    }
}
