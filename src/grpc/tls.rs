//! The gRPC listener's TLS handshakes, bounded in number and time, so a client
//! that stalls its handshake never holds up the others. The certificate and
//! the client CA of mutual TLS come from [`crate::tls::ServerTls`], re-read
//! when their files change.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::server::TlsStream;

/// Handshakes in progress at once; further connections wait to be accepted.
const MAX_HANDSHAKES: usize = 64;

/// Accepts connections on `listener` and hands over those whose TLS handshake
/// finished within `handshake_timeout`; a failed handshake is logged at debug
/// level and dropped. Ends when the receiver is dropped.
pub fn accept(
    listener: TcpListener,
    acceptor: crate::tls::LiveAcceptor,
    handshake_timeout: Duration,
) -> mpsc::Receiver<Result<TlsStream<TcpStream>, std::io::Error>> {
    let (sender, receiver) = mpsc::channel(MAX_HANDSHAKES);
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                _ = sender.closed() => return,
                permit = handshakes.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
            };
            let (stream, peer) = tokio::select! {
                _ = sender.closed() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::debug!(%error, "grpc: accept failed");
                        // Out of file descriptors and the like: back off a little.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let acceptor = acceptor.current();
            let sender = sender.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = sender.send(Ok(tls)).await;
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "grpc: TLS handshake refused")
                    }
                    Err(_) => tracing::debug!(%peer, "grpc: TLS handshake timed out"),
                }
            });
        }
    });
    receiver
}
