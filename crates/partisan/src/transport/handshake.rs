//! Running the core handshake state machines over a transport's stream.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use partisan_core::auth::Nonce;
use partisan_core::connection_plan::{DialFailure, DialRequest};
use partisan_core::id::NodeName;
use partisan_core::wire::handshake::{
    self, Acceptor, DialParams, Dialer, DialerStep, HandshakeError, PeerHello, RefuseCode,
};
use partisan_core::wire::FrameDecoder;
use rand::RngCore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::node::Shared;
use crate::transport::Stream;

/// Largest handshake frame accepted (a spec with 64 channels and 16 addresses fits easily).
const MAX_HANDSHAKE_FRAME: usize = 64 * 1024;

/// Why a handshake ended without a connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HsFail {
    #[error("{0}")]
    Protocol(#[from] HandshakeError),
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("frame: {0}")]
    Frame(#[from] partisan_core::wire::FrameError),
    #[error("timed out")]
    Timeout,
    #[error("connection closed during handshake")]
    Eof,
}

impl HsFail {
    /// Whether this failure is a refusal (either side) rather than an I/O problem.
    pub(crate) fn is_refusal(&self) -> bool {
        matches!(self, HsFail::Protocol(_))
    }

    /// Counts this failure in the node's stats: a race (the losing side of a simultaneous dial,
    /// a peer shutting down: working as designed), a refusal (either side) or a failure.
    pub(crate) fn count(&self, stats: &crate::stats::Stats) {
        let counter = if self.is_race() {
            &stats.node.handshakes_raced
        } else if self.is_refusal() {
            &stats.node.handshakes_refused
        } else {
            &stats.node.handshakes_failed
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether this is a benign refusal: the losing side of a simultaneous dial, or a peer
    /// that is shutting down (the one classification of [`DialFailure::is_race`]).
    pub(crate) fn is_race(&self) -> bool {
        self.as_dial_failure(None).is_race()
    }

    /// Whether another address of the same node may succeed where this one failed.
    fn next_address_may_help(&self) -> bool {
        matches!(
            self,
            HsFail::Io(_)
                | HsFail::Timeout
                | HsFail::Eof
                | HsFail::Frame(_)
                | HsFail::Protocol(
                    HandshakeError::WrongName { .. }
                        | HandshakeError::NotPartisan
                        | HandshakeError::Malformed(_)
                        | HandshakeError::Refused {
                            code: RefuseCode::WrongName,
                            ..
                        }
                )
        )
    }

    /// What this failure of a dial for node `expected` (if known) means to the connection planner (which decides from it
    /// whether the target is redialed).
    pub(crate) fn as_dial_failure(&self, expected: Option<&NodeName>) -> DialFailure {
        match self {
            HsFail::Protocol(e) => DialFailure::from_handshake(e, expected),
            HsFail::Io(e) => DialFailure::io(e),
            HsFail::Frame(e) => DialFailure::Protocol(e.to_string()),
            HsFail::Timeout => DialFailure::TimedOut,
            HsFail::Eof => DialFailure::Unreachable {
                kind: io::ErrorKind::UnexpectedEof,
                detail: "the peer closed the connection during the handshake".into(),
            },
        }
    }
}

pub(crate) fn nonce() -> Nonce {
    let mut n = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut n);
    n
}

async fn read_frame(
    stream: &mut Stream,
    buf: &mut BytesMut,
    decoder: &FrameDecoder,
) -> Result<Bytes, HsFail> {
    loop {
        if let Some(f) = decoder.decode(buf)? {
            return Ok(f);
        }
        buf.reserve(decoder.wanted(buf).saturating_sub(buf.len()).max(512));
        if stream.reader.read_buf(buf).await? == 0 {
            return Err(HsFail::Eof);
        }
    }
}

/// An established, admitted-by-the-peer outgoing connection.
pub(crate) struct Dialed {
    pub(crate) stream: Stream,
    pub(crate) peer: PeerHello,
    pub(crate) leftover: BytesMut,
}

/// Runs the dialer handshake at each address of `req` in turn until one reaches the node it
/// names. An address that does not answer, answers with another node (a stale address, a
/// port reused by another process) or does not speak partisan is skipped; a refusal by the
/// node itself (cookie, overlay, admission) ends the dial.
pub(crate) async fn dial(shared: &Shared, req: &DialRequest) -> Result<Dialed, HsFail> {
    let mut last = HsFail::Eof;
    for addr in &req.addrs {
        match dial_addr(shared, req, *addr).await {
            Ok(d) => return Ok(d),
            Err(e) if e.next_address_may_help() => {
                tracing::debug!(%addr, reason = %e, "address did not reach the node; trying the next");
                last = e;
            }
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

async fn dial_addr(shared: &Shared, req: &DialRequest, addr: SocketAddr) -> Result<Dialed, HsFail> {
    let cfg = &shared.cfg;
    let mut stream = tokio::time::timeout(cfg.connect_timeout, shared.transport.dial(addr))
        .await
        .map_err(|_| HsFail::Timeout)??;
    let params = DialParams {
        local: shared.identity.clone(),
        expect: req.expect.clone(),
        channel: req.channel.clone(),
        lane: req.lane,
    };
    let run = async {
        let (mut dialer, hello) = Dialer::start(params, cfg.cookie.clone(), nonce());
        stream.writer.write_all(&hello).await?;
        let decoder = FrameDecoder::new(MAX_HANDSHAKE_FRAME);
        let mut buf = BytesMut::with_capacity(4096);
        loop {
            let frame = read_frame(&mut stream, &mut buf, &decoder).await?;
            match dialer.on_frame(&frame) {
                Ok(DialerStep::Send(f)) => stream.writer.write_all(&f).await?,
                Ok(DialerStep::Established(peer)) => return Ok((peer, buf)),
                Err(e) => {
                    if let Some((code, detail)) = e.refusal() {
                        let _ = stream
                            .writer
                            .write_all(&handshake::encode_refusal(code, detail))
                            .await;
                    }
                    return Err(HsFail::Protocol(dialer.typed(e)));
                }
            }
        }
    };
    let (peer, leftover) = tokio::time::timeout(cfg.handshake_timeout, run)
        .await
        .map_err(|_| HsFail::Timeout)??;
    Ok(Dialed {
        stream,
        peer,
        leftover,
    })
}

/// Runs the acceptor side up to an authenticated dialer; admission is the caller's, who sends
/// the returned Welcome frame (our proof) if it admits the dialer.
pub(crate) async fn accept(
    shared: &Shared,
    stream: &mut Stream,
    timeout: Duration,
) -> Result<(PeerHello, Bytes, BytesMut), HsFail> {
    let run = async {
        let decoder = FrameDecoder::new(MAX_HANDSHAKE_FRAME);
        let mut buf = BytesMut::with_capacity(4096);
        let hello = read_frame(stream, &mut buf, &decoder).await?;
        let cookie = shared.cfg.cookie.clone();
        let (acceptor, challenge) =
            match Acceptor::on_hello(&shared.identity, cookie, nonce(), &hello) {
                Ok(x) => x,
                Err(e) => return Err(refuse(stream, e).await),
            };
        stream.writer.write_all(&challenge).await?;
        let response = read_frame(stream, &mut buf, &decoder).await?;
        match acceptor.on_response(shared.identity.overlay, &response) {
            Ok((peer, welcome)) => Ok((peer, welcome, buf)),
            Err(e) => Err(refuse(stream, e).await),
        }
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| HsFail::Timeout)?
}

async fn refuse(stream: &mut Stream, e: HandshakeError) -> HsFail {
    if let Some((code, detail)) = e.refusal() {
        let _ = stream
            .writer
            .write_all(&handshake::encode_refusal(code, detail))
            .await;
    }
    HsFail::Protocol(e)
}

/// Sends a refusal decided after authentication (tie-break, stale creation, shutdown).
pub(crate) async fn send_refusal(stream: &mut Stream, code: RefuseCode, detail: &str) {
    let _ = stream
        .writer
        .write_all(&handshake::encode_refusal(code, detail))
        .await;
    let _ = stream.writer.shutdown().await;
}
