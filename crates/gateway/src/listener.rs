//! Accepting connections, the connection limit, and graceful shutdown.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::Gateway;
use crate::connection::Connection;
use crate::stats::bump;
use crate::workers::ConnectionWorkers;

/// How long shutdown waits for connections to finish the request they are in.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves clients on `listener` until `shutdown` turns true, running each connection on
/// one of `workers` (this task only accepts). Then it stops accepting, lets
/// every connection finish the request it is processing (their replies are written), and
/// returns once they are all closed or [`DRAIN_TIMEOUT`] has passed.
///
/// The connection limit is a semaphore of `max_connections` permits; each connection task
/// holds one. Acquiring all of them at shutdown is how we know every connection is gone.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    workers: &ConnectionWorkers,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let max = gateway.config.max_connections.max(1);
    let permits = Arc::new(Semaphore::new(max));
    let _listed = gateway.connections.register_listener(
        listener.as_raw_fd(),
        listener.local_addr()?,
        gateway.store.clock().now(),
    );
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let (mut stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Typically out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            bump(&gateway.stats.rejected_connections);
            tokio::spawn(async move {
                // memcached's words, then close.
                let _ = stream
                    .write_all(b"ERROR Too many open connections\r\n")
                    .await;
                let _ = stream.shutdown().await;
            });
            continue;
        };
        let _ = stream.set_nodelay(true);
        // The socket moves to the worker's event loop: off this one, onto that one.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(err) => {
                tracing::warn!(error = %err, %peer, "could not hand the connection over");
                continue;
            }
        };
        let gateway = Arc::clone(&gateway);
        workers.spawn(|closing| async move {
            match tokio::net::TcpStream::from_std(stream) {
                Ok(stream) => Connection::new(stream, gateway).run(closing).await,
                Err(err) => {
                    tracing::warn!(error = %err, %peer, "could not register the connection");
                }
            }
            tracing::trace!(%peer, "connection closed");
            drop(permit);
        });
    }
    drop(listener);
    workers.close_connections();
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, permits.acquire_many(max as u32)).await;
    if drained.is_err() {
        tracing::warn!("shutdown: some connections did not finish within {DRAIN_TIMEOUT:?}");
    }
    Ok(())
}
