//! A TCP proxy that can *stall* its connections — keep them open but pass no byte in either
//! direction — as a network partition, a stalled connection or a failover does to a client, which
//! then neither gets an answer nor an error. Used to cut one worker off from its database while
//! another still reaches it.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// A proxy on a loopback port forwarding to `target`, stallable at will. Dropping it closes every
/// connection.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// let proxy = outbox_faults::StallingProxy::start("127.0.0.1:5432".parse().unwrap()).await?;
/// let url = format!("postgres://postgres@{}/test", proxy.addr());
/// proxy.stall(); // clients of `url` now wait forever
/// proxy.heal(); // and go on
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct StallingProxy {
    addr: SocketAddr,
    stalled: Arc<watch::Sender<bool>>,
    _connections: tokio::task::JoinHandle<()>,
}

impl StallingProxy {
    /// Listens on a free loopback port and forwards every connection to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stalled = Arc::new(watch::channel(false).0);
        let accepting = Arc::clone(&stalled);
        let connections = tokio::spawn(async move {
            let mut pumps = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let stalled = accepting.subscribe();
                pumps.spawn(async move {
                    if let Ok(server) = TcpStream::connect(target).await {
                        forward(client, server, stalled).await;
                    }
                });
            }
        });
        Ok(Self {
            addr,
            stalled,
            _connections: connections,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops passing bytes on every connection, new ones included; nothing is closed.
    pub fn stall(&self) {
        self.stalled.send_replace(true);
    }

    /// Passes bytes again, those held meanwhile first.
    pub fn heal(&self) {
        self.stalled.send_replace(false);
    }
}

impl Drop for StallingProxy {
    fn drop(&mut self) {
        self._connections.abort();
    }
}

async fn forward(client: TcpStream, server: TcpStream, stalled: watch::Receiver<bool>) {
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::select! {
        () = pump(client_read, server_write, stalled.clone()) => {}
        () = pump(server_read, client_write, stalled) => {}
    }
}

/// Copies `from` to `to`, holding what it read while the proxy is stalled.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut stalled: watch::Receiver<bool>,
) {
    let mut buf = vec![0_u8; 64 * 1024];
    loop {
        if stalled.wait_for(|s| !*s).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stalled.wait_for(|s| !*s).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
