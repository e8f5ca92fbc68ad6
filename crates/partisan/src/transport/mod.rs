//! The runtime's edge: how a node listens, accepts and dials, whatever carries the bytes.
//!
//! A [`Transport`] binds [`Listener`]s and dials addresses; both hand out a [`Stream`], the
//! two directions of one connection as separately owned halves. The node runs its handshake
//! over a stream, then gives the reader half to the connection's reader task and the writer
//! half to its writer task. Everything above this module (framing, the handshake, lanes,
//! keepalive) is the same on every transport.
//!
//! Two transports ship: [`TcpTransport`] (the default; `TCP_NODELAY` on every connection) and
//! [`MemoryTransport`] (one isolated in-memory network per instance, for tests, including
//! under tokio's paused clock). TLS and QUIC are meant to plug in here as further
//! implementations of the same two traits.
//!
//! Transports report failures as [`std::io::Error`], classified by [`std::io::ErrorKind`]
//! the way TCP does (`ConnectionRefused` when nothing listens at a dialed address,
//! `AddrInUse` when a listen address is taken): the node treats every such error alike, as a
//! failed dial or bind.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};

pub(crate) mod accept;
pub(crate) mod handshake;
mod memory;
mod tcp;

pub use memory::MemoryTransport;
pub use tcp::TcpTransport;

/// A boxed future that can move between threads: what the transport traits return, so they
/// stay object-safe without an async-trait dependency.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The receiving direction of a [`Stream`].
pub type StreamReader = Box<dyn AsyncRead + Send + Unpin>;

/// The sending direction of a [`Stream`]. Vectored writes pass through the box: a writer
/// whose transport supports them reports `is_write_vectored() == true` here too.
pub type StreamWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// One connection to a peer, as two owned halves that may be used from different tasks.
///
/// Every transport guarantees, as TCP does:
/// - bytes arrive in order, each once, and none is invented;
/// - after the peer shuts its writer down (`shutdown().await`) or drops it, the reader
///   returns every byte written before, then `Ok(0)` (end of stream);
/// - once both halves of one side are dropped, the connection is closed: the other side
///   reads end of stream (or an error) and its writes fail (possibly only after some bytes
///   were buffered);
/// - buffering is bounded: a writer whose peer does not read eventually stops making
///   progress (back-pressure), it does not buffer without limit.
pub struct Stream {
    /// Bytes from the peer.
    pub reader: StreamReader,
    /// Bytes to the peer.
    pub writer: StreamWriter,
}

impl Stream {
    /// A stream from its two halves.
    pub fn new(
        reader: impl AsyncRead + Send + Unpin + 'static,
        writer: impl AsyncWrite + Send + Unpin + 'static,
    ) -> Stream {
        Stream {
            reader: Box::new(reader),
            writer: Box::new(writer),
        }
    }
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream")
            .field("write_vectored", &self.writer.is_write_vectored())
            .finish_non_exhaustive()
    }
}

/// How a node reaches its peers and is reached by them. Give one to
/// [`NodeBuilder::transport`](crate::NodeBuilder::transport); the default is
/// [`TcpTransport`].
///
/// Addresses are [`SocketAddr`]s on every transport: they are what a node advertises in its
/// spec and what peers dial. One transport value may serve many nodes at once (it is shared,
/// hence `Sync`).
pub trait Transport: fmt::Debug + Send + Sync + 'static {
    /// Binds `addr` and returns a listener for it. Port 0 picks a free port; the listener's
    /// [`Listener::local_addr`] reports the one picked. Fails (for example with
    /// `AddrInUse`) without binding anything when the address cannot be had.
    fn listen(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Box<dyn Listener>>>;

    /// Opens a connection to whatever listens at `addr`. Fails with `ConnectionRefused` when
    /// nothing does (and may take long to fail when nothing answers at all: the caller bounds
    /// the wait). A successful dial says nothing about who answered: the handshake does.
    fn dial(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Stream>>;
}

/// A bound listen address, accepting connections until dropped. Dropping it unbinds the
/// address (dials to it are then refused) and drops connections not yet accepted.
pub trait Listener: Send + 'static {
    /// The address this listener is bound to, with the port picked for port 0.
    fn local_addr(&self) -> SocketAddr;

    /// The next inbound connection, with the remote address (for logs only: it identifies
    /// nothing). Cancel-safe: dropping the future before it completes loses no connection.
    /// An error concerns this accept only; the listener stays usable.
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(Stream, SocketAddr)>>;
}
