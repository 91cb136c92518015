//! The accept loop and [`SimHandle`], a simulator serving in the background.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::{SimService, Simulator};

/// How long a shutdown waits for requests in flight before closing their connections
/// (a trickling body, for one, never finishes on its own).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

impl Simulator {
    /// Serves on `listener` until `shutdown` resolves, then stops accepting, lets
    /// requests in flight finish (up to [`SHUTDOWN_GRACE`]) and returns.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut connections = JoinSet::new();
        let service = self.service();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        connections.spawn(serve_connection(
                            stream,
                            peer,
                            service.clone(),
                            stop_rx.clone(),
                        ));
                    }
                    Err(e) => {
                        // Typically out of file descriptors; back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                },
            }
        }
        drop(listener);
        // Receivers only fail once every connection has ended, which is fine.
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                connections = connections.len(),
                "shutdown grace over; closing connections"
            );
            connections.shutdown().await;
        }
        Ok(())
    }

    /// Binds `addr` (use `127.0.0.1:0` for a free port) and serves in the background
    /// until the returned handle is shut down or dropped.
    pub async fn spawn(self, addr: SocketAddr) -> io::Result<SimHandle> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let sim = self.clone();
        let task = tokio::spawn(self.serve(listener, async move {
            // Resolves on a send and when the handle is dropped alike.
            let _ = stopped.await;
        }));
        Ok(SimHandle {
            addr,
            sim,
            stop,
            task,
        })
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    service: SimService,
    mut stop: watch::Receiver<bool>,
) {
    // Small answers: do not let Nagle hold them back.
    let _ = stream.set_nodelay(true);
    let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    // Injected drops and resets end here, as do clients that give up.
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.wait_for(|stop| *stop), if !stopping => {
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// A simulator serving in the background, from [`Simulator::spawn`]. Dropping it
/// stops the server.
#[derive(Debug)]
pub struct SimHandle {
    addr: SocketAddr,
    sim: Simulator,
    stop: oneshot::Sender<()>,
    task: JoinHandle<io::Result<()>>,
}

impl SimHandle {
    /// The address the simulator listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, the base URL to give a ParagoN client.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The simulator, to read its counters or change its faults.
    pub fn sim(&self) -> &Simulator {
        &self.sim
    }

    /// Stops the server and waits until it has stopped (requests in flight get up to
    /// [`SHUTDOWN_GRACE`]).
    pub async fn shutdown(self) {
        let Self { stop, task, .. } = self;
        let _ = stop.send(());
        if let Err(e) = task.await {
            tracing::warn!(error = %e, "simulator task failed");
        }
    }
}
