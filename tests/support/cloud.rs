//! A cloud-mode deployment for end-to-end tests: a real `redis-server`, a real S3 server
//! (`s3s-fs`), one `auth`, one `lmtp` and two `pop3` processes of the built binary.

use std::path::PathBuf;
use std::time::Duration;

use super::backends::{self, ACCESS_KEY, BUCKET, Process, SECRET_KEY};
use super::{Server, ServerBuilder, admin_remote};

/// Lease time of the maildrop lock in these tests (the smallest allowed).
pub const LOCK_TTL: Duration = Duration::from_secs(3);

pub struct Cloud {
    /// The admin token file: role `auth` requires the token, `admin` sends it.
    pub admin_token: PathBuf,
    _secrets: tempfile::TempDir,
    pub redis: Process,
    pub s3: Process,
    pub auth: Server,
    pub lmtp: Server,
    pub pop_a: Server,
    pub pop_b: Server,
}

pub fn front_end(
    role: &'static str,
    redis: &Process,
    s3: &Process,
    auth: &Server,
) -> ServerBuilder {
    Server::builder()
        .role(role)
        .option("AUTH__BACKEND", "grpc")
        .option("AUTH__ENDPOINT", &format!("http://{}", auth.grpc))
        .option("AUTH__TIMEOUT", "500ms")
        .option("AUTH__MAX_ATTEMPTS", "2")
        .option("STORE__BACKEND", "s3")
        .option(
            "STORE__S3__ENDPOINT",
            &format!("http://127.0.0.1:{}", s3.port()),
        )
        .option("STORE__S3__BUCKET", BUCKET)
        .option("STORE__S3__ACCESS_KEY_ID", ACCESS_KEY)
        .option("STORE__S3__SECRET_ACCESS_KEY", SECRET_KEY)
        .option("STORE__S3__CONNECT_TIMEOUT", "500ms")
        .option("STORE__S3__OPERATION_TIMEOUT", "2s")
        .option("STORE__S3__MAX_ATTEMPTS", "2")
        .option("LOCK__BACKEND", "redis")
        .option(
            "LOCK__REDIS__URLS",
            &format!("[\"redis://127.0.0.1:{}\"]", redis.port()),
        )
        .option("LOCK__REDIS__COMMAND_TIMEOUT", "500ms")
        // Used when a test turns on `LIMITS__BACKEND=redis`.
        .option(
            "LIMITS__REDIS__URLS",
            &format!("[\"redis://127.0.0.1:{}\"]", redis.port()),
        )
        .option("LIMITS__REDIS__COMMAND_TIMEOUT", "500ms")
        .option("POP3__LOCK_TTL", &format!("{}s", LOCK_TTL.as_secs()))
}

impl Cloud {
    pub fn start() -> Cloud {
        Self::start_with(|b| b)
    }

    /// Starts the deployment, letting `pop3` adjust the options of both POP3 pods.
    pub fn start_with(pop3: impl Fn(ServerBuilder) -> ServerBuilder) -> Cloud {
        Self::start_on(backends::s3(), pop3)
    }

    /// Starts the deployment on the S3 server `s3` (`backends::s3` or `backends::moto`).
    pub fn start_on(s3: Process, pop3: impl Fn(ServerBuilder) -> ServerBuilder) -> Cloud {
        let secrets = tempfile::tempdir().expect("tempdir");
        let admin_token = secrets.path().join("admin-token");
        std::fs::write(&admin_token, "e2e-admin-token-7f3a9c\n").expect("admin token");
        let redis = backends::redis();
        let auth = Server::builder()
            .role("auth")
            .option("AUTH__ADMIN_TOKEN_FILE", &admin_token.display().to_string())
            .start();
        let lmtp = front_end("lmtp", &redis, &s3, &auth).start();
        let pop_a = pop3(front_end("pop3", &redis, &s3, &auth)).start();
        let pop_b = pop3(front_end("pop3", &redis, &s3, &auth)).start();
        Cloud {
            admin_token,
            _secrets: secrets,
            redis,
            s3,
            auth,
            lmtp,
            pop_a,
            pop_b,
        }
    }

    /// Runs `cloudpop admin --remote ARGS` and asserts success.
    pub fn admin(&self, args: &[&str], stdin: &str) -> String {
        let out = admin_remote(self.auth.grpc, Some(&self.admin_token), args, stdin);
        assert!(
            out.status.success(),
            "admin {args:?}: {}\n{}",
            out.stdout,
            out.stderr
        );
        out.stdout
    }

    /// A tenant that accepts passwords without TLS (these tests talk plain TCP).
    pub fn tenant(&self, id: &str, domain: &str) {
        self.admin(&["tenant", "add", id, "--domain", domain], "");
        self.admin(&["tenant", "set", id, "--cleartext-allowed", "true"], "");
    }

    pub fn user(&self, login: &str, password: &str) {
        self.admin(&["user", "add", login], password);
    }
}
