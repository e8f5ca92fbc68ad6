//! TCP, the default transport.

use std::io;
use std::net::SocketAddr;

use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

use super::{BoxFuture, Listener, Stream, Transport};

/// Plain TCP. Every connection, dialed or accepted, has `TCP_NODELAY` set (the writer already
/// coalesces frames; Nagle's algorithm would only delay small messages), and its writer does
/// vectored writes.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpTransport;

impl TcpTransport {
    /// The TCP transport.
    pub fn new() -> TcpTransport {
        TcpTransport
    }
}

impl Transport for TcpTransport {
    fn listen(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Box<dyn Listener>>> {
        Box::pin(async move {
            let inner = TcpListener::bind(addr).await?;
            let local = inner.local_addr()?;
            Ok(Box::new(TcpAcceptor { inner, local }) as Box<dyn Listener>)
        })
    }

    fn dial(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Stream>> {
        Box::pin(async move {
            let (reader, writer) = split_nodelay(TcpStream::connect(addr).await?)?;
            Ok(Stream::new(reader, writer))
        })
    }
}

/// A bound TCP listener.
struct TcpAcceptor {
    inner: TcpListener,
    local: SocketAddr,
}

impl Listener for TcpAcceptor {
    fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn accept(&mut self) -> BoxFuture<'_, io::Result<(Stream, SocketAddr)>> {
        Box::pin(async move {
            loop {
                let (tcp, from) = self.inner.accept().await?;
                match split_nodelay(tcp) {
                    Ok((reader, writer)) => return Ok((Stream::new(reader, writer), from)),
                    // Only a socket already dead fails here (a peer that connected and reset
                    // at once): nothing to accept, and no reason to fail the listener.
                    Err(e) => tracing::debug!(%from, error = %e, "dropping an accepted connection"),
                }
            }
        })
    }
}

/// Sets `TCP_NODELAY` and splits the socket into its owned halves.
fn split_nodelay(tcp: TcpStream) -> io::Result<(OwnedReadHalf, OwnedWriteHalf)> {
    tcp.set_nodelay(true)?;
    Ok(tcp.into_split())
}

#[cfg(test)]
mod tests;
