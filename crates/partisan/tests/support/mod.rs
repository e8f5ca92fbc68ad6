//! Helpers shared by the integration tests (each test binary uses a subset).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use partisan::partisan_core::auth::Cookie;
use partisan::partisan_core::bytes::BytesMut;
use partisan::partisan_core::wire::handshake::{DialParams, Dialer, DialerStep, Identity};
use partisan::partisan_core::wire::FrameDecoder;
use partisan::{ChannelName, NodeName, NodeSpec, OverlayKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

/// Completes a real, authenticated handshake with `addr` over a raw socket and returns the
/// stream ready for frames, so a test can then send what no well-behaved node would.
pub async fn raw_handshake(addr: SocketAddr, peer: RawPeer<'_>) -> TcpStream {
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
    let mut s = TcpStream::connect(addr).await.unwrap();
    // Handshake frames come length-prefixed already.
    s.write_all(&hello).await.unwrap();
    let decoder = FrameDecoder::new(1 << 20);
    let mut buf = BytesMut::new();
    loop {
        let body = loop {
            if let Some(body) = decoder.decode(&mut buf).unwrap() {
                break body;
            }
            assert!(
                s.read_buf(&mut buf).await.unwrap() > 0,
                "node closed the handshake"
            );
        };
        match dialer.on_frame(&body).unwrap() {
            DialerStep::Send(frame) => s.write_all(&frame).await.unwrap(),
            DialerStep::Established(_) => return s,
        }
    }
}
