//! Helpers shared by the integration tests (each test binary uses a subset).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use partisan::partisan_core::auth::Cookie;
use partisan::partisan_core::bytes::BytesMut;
use partisan::partisan_core::wire::handshake::{DialParams, Dialer, DialerStep, Identity};
use partisan::partisan_core::wire::FrameDecoder;
use partisan::transport::Stream;
use partisan::{
    ChannelName, MemoryTransport, Node, NodeBuilder, NodeName, NodeSpec, OverlayKind, TcpTransport,
    Transport,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The network a test's nodes run on. Each test body takes one and runs twice (see
/// [`on_both_transports!`]): over loopback TCP on a multi-threaded runtime, and over a
/// [`MemoryTransport`] of its own under tokio's paused clock, where every timeout elapses as
/// soon as nothing else can run.
#[derive(Debug, Clone)]
pub enum Net {
    /// Real loopback TCP, the nodes' default transport.
    Tcp,
    /// One in-memory network shared by the test's nodes.
    Memory(MemoryTransport),
}

impl Net {
    /// A builder for node `name` on this network (on TCP, with the default transport).
    pub fn builder(&self, name: &str) -> NodeBuilder {
        let b = NodeBuilder::new(name);
        match self {
            Net::Tcp => b,
            Net::Memory(m) => b.transport(m.clone()),
        }
    }

    /// A raw listener on `addr` (port 0 picks one), for a test playing a misbehaving node.
    pub async fn listen(
        &self,
        addr: SocketAddr,
    ) -> std::io::Result<Box<dyn partisan::transport::Listener>> {
        match self {
            Net::Tcp => TcpTransport.listen(addr).await,
            Net::Memory(m) => m.listen(addr).await,
        }
    }

    /// A raw connection to `addr`, for a test playing a misbehaving peer.
    pub async fn dial(&self, addr: SocketAddr) -> std::io::Result<Stream> {
        match self {
            Net::Tcp => TcpTransport.dial(addr).await,
            Net::Memory(m) => m.dial(addr).await,
        }
    }
}

/// Runs the test body `async fn $name(net: Net)` (defined next to it) twice, as
/// `$name::tcp` (loopback TCP, multi-threaded runtime, real time) and `$name::memory` (a
/// fresh [`MemoryTransport`], current-thread runtime, paused clock).
#[macro_export]
macro_rules! on_both_transports {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn tcp() {
                super::$name($crate::support::Net::Tcp).await
            }

            #[tokio::test(start_paused = true)]
            async fn memory() {
                super::$name($crate::support::Net::Memory(
                    partisan::MemoryTransport::new(),
                ))
                .await
            }
        }
    };
}

/// Longest any poll in the tests waits for its condition.
pub const EVENTUALLY: Duration = Duration::from_secs(30);

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "off".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Polls `cond` every 10 ms until it holds; fails the test after [`EVENTUALLY`].
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A hand-driven peer: who it claims to be and which connection it opens.
pub struct RawPeer<'a> {
    /// Full node name.
    pub name: &'a str,
    pub cookie: &'a str,
    pub overlay: OverlayKind,
    /// Its channels (the acceptor only checks the lane against its own spec).
    pub spec_of: Option<&'a NodeSpec>,
    /// The node it means to reach, if it names one.
    pub expect: Option<NodeName>,
    pub channel: ChannelName,
    pub lane: u16,
}

/// Completes a real, authenticated handshake with `addr` over a raw connection of `net` and
/// returns the stream ready for frames, so a test can then send what no well-behaved node
/// would.
pub async fn raw_handshake(net: &Net, addr: SocketAddr, peer: RawPeer<'_>) -> Stream {
    let spec = NodeSpec::new(
        NodeName::new(peer.name).unwrap(),
        vec!["127.0.0.1:9".parse().unwrap()],
        peer.spec_of
            .map(|s| s.channels().clone())
            .unwrap_or_default(),
    )
    .unwrap();
    let params = DialParams {
        local: Identity {
            spec,
            creation: 1,
            overlay: peer.overlay,
            tag: None,
            max_frame: 1 << 20,
        },
        expect: peer.expect,
        channel: peer.channel,
        lane: peer.lane,
    };
    let (mut dialer, hello) = Dialer::start(params, Cookie::new(peer.cookie).unwrap(), [7; 32]);
    let mut s = net.dial(addr).await.unwrap();
    // Handshake frames come length-prefixed already.
    s.writer.write_all(&hello).await.unwrap();
    let decoder = FrameDecoder::new(1 << 20);
    let mut buf = BytesMut::new();
    loop {
        let body = loop {
            if let Some(body) = decoder.decode(&mut buf).unwrap() {
                break body;
            }
            assert!(
                s.reader.read_buf(&mut buf).await.unwrap() > 0,
                "node closed the handshake"
            );
        };
        match dialer.on_frame(&body).unwrap() {
            DialerStep::Send(frame) => s.writer.write_all(&frame).await.unwrap(),
            DialerStep::Established(_) => return s,
        }
    }
}

/// A node `NAME@127.0.0.1` on `net` (logging per `RUST_LOG`), for the process tests.
pub async fn node(net: &Net, name: &str) -> Node {
    init_tracing();
    net.builder(&format!("{name}@127.0.0.1"))
        .cookie("processes")
        .start()
        .await
        .unwrap()
}

/// Two nodes `TAGa` and `TAGb` of one full mesh, each seeing the other up.
pub async fn pair(net: &Net, tag: &str) -> (Node, Node) {
    let a = node(net, &format!("{tag}a")).await;
    let b = node(net, &format!("{tag}b")).await;
    a.join_and_wait(b.listen_addrs()[0], EVENTUALLY)
        .await
        .unwrap();
    let (x, y) = (a.clone(), b.name().clone());
    eventually("b up at a", move || {
        x.members().contains(&y) && x.is_connected(&y)
    })
    .await;
    let (x, y) = (b.clone(), a.name().clone());
    eventually("a up at b", move || x.is_connected(&y)).await;
    (a, b)
}

/// Every monitor and link table of `n` is empty, eventually.
pub async fn tables_empty(n: &Node) {
    let m = n.clone();
    eventually("empty monitor and link tables", move || {
        m.stats().processes.table_entries() == 0
    })
    .await;
}
