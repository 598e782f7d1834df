//! SDK errors as [`StoreError`]s: short, free of secrets, and classified once here.

use std::error::Error;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use crate::store::StoreError;

/// Longest error text kept: enough for the cause, short enough for one log line.
const MAX_MESSAGE_CHARS: usize = 240;

/// Any failure of `op` as [`StoreError::Unavailable`]: S3 errors are either transient
/// (network, throttling, server trouble) or configuration problems (bucket, credentials)
/// that an operator fixes without the message changing; neither means the mail is gone.
pub(super) fn unavailable<E>(op: &str, err: &SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + Error + 'static,
{
    StoreError::Unavailable(describe(op, err))
}

/// A one-line description of `err`. Service errors are named by S3 error code and HTTP
/// status; transport errors by their cause chain (which holds no credentials: signing
/// happens before dispatch and the signature is not part of any error).
pub(super) fn describe<E>(op: &str, err: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + Error + 'static,
{
    let text = match err {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("unknown error");
            let status = service.raw().status().as_u16();
            format!("S3 {op}: {code} (HTTP {status})")
        }
        SdkError::TimeoutError(_) => format!("S3 {op}: timed out"),
        _ => format!("S3 {op}: {}", cause_chain(err)),
    };
    truncate(text)
}

/// `error: cause: cause's cause…`, each level's Display once; a level whose text already
/// appears (wrappers often repeat their source) is left out.
fn cause_chain(err: &dyn Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !part.is_empty() && !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

fn truncate(text: String) -> String {
    match text.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Layer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|l| l as &(dyn Error + 'static))
        }
    }

    #[test]
    fn causes_are_joined_once_each() {
        let refused = Layer("connection refused", None);
        let wrapper = Layer("connection refused", Some(Box::new(refused)));
        let top = Layer("dispatch failure", Some(Box::new(wrapper)));
        assert_eq!(cause_chain(&top), "dispatch failure: connection refused");
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let long = "é".repeat(MAX_MESSAGE_CHARS + 10);
        let cut = truncate(long);
        assert_eq!(cut.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(truncate("short".to_owned()), "short");
    }
}
