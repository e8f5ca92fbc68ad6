//! An in-memory network: nodes of one process reach each other without sockets, so tests
//! run without ports, in parallel, and under tokio's paused clock.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::{BoxFuture, Listener, Stream, Transport};

/// Bytes buffered in each direction of a connection before the writer waits for the reader
/// (the role of TCP's socket buffers).
const PIPE_BYTES: usize = 256 * 1024;
/// Connections dialed but not yet accepted, per listener; a dial beyond it is refused.
const BACKLOG: usize = 1024;
/// Ports handed out for port 0: the IANA dynamic range, as an operating system would.
const FIRST_EPHEMERAL: u16 = 49152;
/// The address [`Listener::accept`] reports for every dialer (dialers have none of their own
/// here); its port counts up so that log lines tell connections apart.
const DIALERS: Ipv4Addr = Ipv4Addr::new(127, 255, 255, 254);

/// One isolated in-memory network. Nodes built with the same instance (or clones of it,
/// which share the network) reach each other at the addresses they listen on; nodes of
/// another instance cannot reach them.
///
/// It behaves as loopback TCP does, where a test can tell:
/// - any [`SocketAddr`] can be bound (use `127.x.y.z` addresses, as you would on loopback);
///   an address bound already is `AddrInUse`, and an unspecified IP (`0.0.0.0`) conflicts
///   with every IP of the same port and receives dials to any of them;
/// - port 0 picks a port of 49152..=65535 that was never bound in this network before (so
///   a restarted node on port 0 never lands on its previous address);
/// - dialing an address nobody listens on fails at once with `ConnectionRefused`;
///   dropping a listener unbinds its address;
/// - each direction of a connection buffers at most 256 KiB: a writer whose peer does not
///   read waits, as with TCP's back-pressure;
/// - shutting down or dropping a writer gives end of stream to the peer's reader after the
///   bytes written before; dropping a reader makes the peer's writes fail (`BrokenPipe`).
///
/// Nothing here reads the clock, so it works under tokio's paused clock
/// (`#[tokio::test(start_paused = true)]`), where timeouts then elapse at once.
///
/// ```
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use partisan::{MemoryTransport, NodeBuilder};
/// let net = MemoryTransport::new();
/// let a = NodeBuilder::new("a@127.0.0.1").cookie("s").transport(net.clone()).start().await?;
/// let b = NodeBuilder::new("b@127.0.0.1").cookie("s").transport(net).start().await?;
/// a.connect(b.listen_addrs()[0]).await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct MemoryTransport {
    network: Arc<Mutex<Network>>,
}

/// The state of one in-memory network.
#[derive(Default)]
struct Network {
    /// Bound addresses and where their dials go.
    bound: HashMap<SocketAddr, mpsc::Sender<(Stream, SocketAddr)>>,
    /// Every port ever bound, so that port 0 never picks one again.
    ports_used: HashSet<u16>,
    /// Ephemeral ports looked at so far (the next candidate is `FIRST_EPHEMERAL` + this).
    ephemeral_tried: u32,
    /// Connections dialed so far (the port of the next dialer's reported address).
    dialed: u16,
}

impl MemoryTransport {
    /// A new, empty network.
    pub fn new() -> MemoryTransport {
        MemoryTransport::default()
    }
}

impl fmt::Debug for MemoryTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryTransport")
            .field("listeners", &self.network.lock().bound.len())
            .finish()
    }
}

impl Network {
    fn bind(&mut self, addr: SocketAddr) -> io::Result<mpsc::Receiver<(Stream, SocketAddr)>> {
        let conflicts = |b: &SocketAddr| {
            b.port() == addr.port()
                && (b.ip() == addr.ip() || b.ip().is_unspecified() || addr.ip().is_unspecified())
        };
        if self.bound.keys().any(conflicts) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{addr} is already bound in this memory network"),
            ));
        }
        let (tx, rx) = mpsc::channel(BACKLOG);
        self.bound.insert(addr, tx);
        self.ports_used.insert(addr.port());
        Ok(rx)
    }

    /// A port never bound before in this network.
    fn fresh_port(&mut self) -> io::Result<u16> {
        while let Ok(port) = u16::try_from(u32::from(FIRST_EPHEMERAL) + self.ephemeral_tried) {
            self.ephemeral_tried += 1;
            if !self.ports_used.contains(&port) {
                return Ok(port);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "no port left for port 0 in this memory network",
        ))
    }

    fn dial(&mut self, addr: SocketAddr) -> io::Result<Stream> {
        let any = SocketAddr::new(unspecified(addr.ip()), addr.port());
        let Some(backlog) = self.bound.get(&addr).or_else(|| self.bound.get(&any)) else {
            return Err(refused(addr));
        };
        self.dialed = self.dialed.wrapping_add(1);
        let from = SocketAddr::new(DIALERS.into(), self.dialed);
        let (dialer, acceptor) = connection();
        backlog
            .try_send((acceptor, from))
            .map_err(|_| refused(addr))?;
        Ok(dialer)
    }
}

impl Transport for MemoryTransport {
    fn listen(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Box<dyn Listener>>> {
        let mut net = self.network.lock();
        let bound = match addr.port() {
            0 => net
                .fresh_port()
                .map(|port| SocketAddr::new(addr.ip(), port)),
            _ => Ok(addr),
        };
        let listener = bound.and_then(|addr| {
            let backlog = net.bind(addr)?;
            Ok(Box::new(MemoryListener {
                network: self.network.clone(),
                addr,
                backlog,
            }) as Box<dyn Listener>)
        });
        Box::pin(std::future::ready(listener))
    }

    fn dial(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Stream>> {
        let stream = self.network.lock().dial(addr);
        Box::pin(std::future::ready(stream))
    }
}

/// A bound address of a [`MemoryTransport`]; unbinds it when dropped.
struct MemoryListener {
    network: Arc<Mutex<Network>>,
    addr: SocketAddr,
    backlog: mpsc::Receiver<(Stream, SocketAddr)>,
}

impl Listener for MemoryListener {
    fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    fn accept(&mut self) -> BoxFuture<'_, io::Result<(Stream, SocketAddr)>> {
        Box::pin(async move {
            // The network holds the sender for as long as this listener lives.
            self.backlog.recv().await.ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotConnected, "memory listener unbound")
            })
        })
    }
}

impl Drop for MemoryListener {
    fn drop(&mut self) {
        // Only this listener could bind its address while it lives. Connections dialed but
        // not accepted are dropped with the backlog: their dialers read end of stream.
        self.network.lock().bound.remove(&self.addr);
    }
}

/// Both ends of a new connection: (the dialer's, the acceptor's). Each direction is a pipe
/// of its own, so that each half owns its end whole and closing it needs no other half.
fn connection() -> (Stream, Stream) {
    let (dialer_out, acceptor_in) = tokio::io::duplex(PIPE_BYTES);
    let (acceptor_out, dialer_in) = tokio::io::duplex(PIPE_BYTES);
    (
        Stream::new(dialer_in, dialer_out),
        Stream::new(acceptor_in, acceptor_out),
    )
}

fn unspecified(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    }
}

fn refused(addr: SocketAddr) -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionRefused,
        format!("nothing listens at {addr} in this memory network"),
    )
}

#[cfg(test)]
mod tests;
