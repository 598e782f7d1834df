//! The POP3 listener: accepts connections, caps them, and drains on shutdown.

use std::sync::Arc;
use std::time::Duration;

use cloudpop_auth::Authenticator;
use cloudpop_maildrop::{MaildropLock, MessageStore};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info_span, warn};

use crate::config::Pop3Config;
use crate::connection;
use crate::session::ConnectionInfo;

/// What a POP3 front-end needs; injected so tests and roles choose the implementations.
#[derive(Debug)]
pub struct Pop3Deps {
    pub authenticator: Arc<dyn Authenticator>,
    pub store: Arc<dyn MessageStore>,
    pub lock: Arc<dyn MaildropLock>,
    pub config: Pop3Config,
}

/// Serves POP3 on `listener` until `shutdown` is cancelled, then waits for sessions to end.
///
/// On shutdown the listener closes at once; each session finishes the response it is
/// sending, says `-ERR [SYS/TEMP]` and closes without UPDATE.
pub async fn run(
    listener: TcpListener,
    deps: Arc<Pop3Deps>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let sessions = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(deps.config.max_connections));
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "pop3 accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            sessions.spawn(refuse(stream));
            continue;
        };
        let info = ConnectionInfo {
            client_addr: Some(peer),
            local_addr: stream.local_addr().ok(),
            tls: false,
        };
        let span = info_span!("pop3_session", client = %peer);
        let deps = deps.clone();
        let shutdown = shutdown.clone();
        sessions.spawn(
            async move {
                connection::serve(stream, deps, info, shutdown).await;
                drop(permit);
            }
            .instrument(span),
        );
    }
    drop(listener);
    sessions.close();
    sessions.wait().await;
    Ok(())
}

async fn refuse(mut stream: TcpStream) {
    let write = stream.write_all(b"-ERR [SYS/TEMP] too many connections, try again later\r\n");
    let _ = tokio::time::timeout(Duration::from_secs(5), write).await;
}
