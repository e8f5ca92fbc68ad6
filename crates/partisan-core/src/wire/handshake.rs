//! Connection handshake, as two sans-IO state machines.
//!
//! ```text
//! dialer                                   acceptor
//!   Hello{identity, expect, channel, lane, nonce_d}  ->
//!                                          checks version, expected name, lane
//!   <- Challenge{identity, nonce_a}
//! checks name
//!   Response{proof_d}                      ->
//!                                          checks proof_d, overlay, admission (tie-break)
//!   <- Welcome{proof_a} | Refused{code, detail}
//! checks proof_a, overlay
//! ```
//!
//! The dialer proves first, so a stranger who connects learns nothing computed from the cookie
//! (no proof to attack offline), and the acceptor never proves to a node it has not
//! authenticated. Both proofs bind both identities as sent (spec, creation, overlay, tag, frame
//! limit), the channel, the lane and both fresh nonces: a man in the middle cannot alter what
//! either side said about itself.
//!
//! Every handshake frame body is `MAGIC` (4 bytes), the protocol version (u16, big endian) and a
//! postcard-encoded [`HandshakeMsg`]. `Refused` is variant 0 and keeps its shape in every
//! version, so a peer speaking another version still learns why it was refused.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::auth::{Cookie, Nonce, Proof, Role, Transcript};
use crate::id::{ChannelName, Creation, NodeName, NodeSpec};
use crate::overlay::{OverlayKind, Tag};

/// First bytes of every handshake frame.
pub const MAGIC: [u8; 4] = *b"PTSN";
/// Protocol version spoken by this build. 2: the dialer proves first, identities carry the
/// frame limit and are bound whole into the proofs (1 had the acceptor prove in its Challenge).
pub const PROTOCOL_VERSION: u16 = 2;

/// Why a handshake was refused; sent to the peer in [`HandshakeMsg::Refused`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefuseCode {
    /// The peer speaks another protocol version.
    Version,
    /// The peer's proof did not verify: it does not hold our cookie.
    BadCookie,
    /// The dialer expected another node at this address.
    WrongName,
    /// The requested channel or lane does not exist on the acceptor.
    UnknownLane,
    /// A node dialed itself.
    SelfConnect,
    /// Both sides dialed the same slot at once and the other connection wins the tie-break.
    Simultaneous,
    /// The dialer is an older incarnation than one already connected.
    StaleCreation,
    /// The acceptor is shutting down.
    ShuttingDown,
    /// The handshake broke the protocol (unexpected message).
    Protocol,
    /// The two nodes run different overlays: they cannot be in the same cluster.
    OverlayMismatch,
    /// The dialer has the acceptor's name but is another run of a node: two live nodes share
    /// a name.
    NameInUse,
}

/// Who a node is, as it presents itself in the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The node's spec.
    pub spec: NodeSpec,
    /// The node's creation (incarnation).
    pub creation: Creation,
    /// The overlay the node runs.
    pub overlay: OverlayKind,
    /// The node's tag (HyParView reservations, client/server role).
    pub tag: Option<Tag>,
    /// The largest frame body the node accepts (`max_frame_size`); the peer sends nothing
    /// larger, so nodes with different limits interoperate.
    pub max_frame: u32,
}

impl Identity {
    /// The identity's canonical bytes, as bound into the handshake proofs.
    pub fn transcript_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("identities always serialize")
    }
}

/// Handshake messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HandshakeMsg {
    /// Refusal with a reason; the sender closes the connection after it.
    Refused {
        /// Machine-readable reason.
        code: RefuseCode,
        /// Human-readable detail for the log.
        detail: String,
    },
    /// First message of the dialer.
    Hello {
        /// Dialer's identity.
        identity: Identity,
        /// Node the dialer expects to reach, when it knows.
        expect: Option<NodeName>,
        /// Channel of this connection.
        channel: ChannelName,
        /// Lane of this connection within the channel.
        lane: u16,
        /// Dialer's fresh nonce.
        nonce: Nonce,
    },
    /// Acceptor's answer: its identity and its nonce (no proof yet: the dialer proves first).
    Challenge {
        /// Acceptor's identity.
        identity: Identity,
        /// Acceptor's fresh nonce.
        nonce: Nonce,
    },
    /// Dialer's proof of the cookie.
    Response {
        /// Dialer's proof.
        proof: Proof,
    },
    /// The acceptor admits the connection and proves the cookie; application traffic follows.
    Welcome {
        /// Acceptor's proof of the cookie.
        proof: Proof,
    },
}

/// Why a handshake failed. The connection is closed; the node keeps running.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The peer does not speak this protocol at all.
    #[error("peer is not a partisan node (bad magic)")]
    NotPartisan,
    /// The peer speaks another protocol version.
    #[error("peer speaks protocol version {theirs}, this node speaks {ours}")]
    Version {
        /// Our version.
        ours: u16,
        /// Theirs.
        theirs: u16,
    },
    /// A handshake frame did not decode.
    #[error("malformed handshake frame: {0}")]
    Malformed(String),
    /// The peer's proof did not verify: the two nodes hold different cookies.
    #[error(
        "the two nodes hold different cookies (the peer's proof of the cookie did not verify)"
    )]
    BadCookie,
    /// The peer is not the node that was expected.
    #[error("the dialer expected node {expected}, reached {got}")]
    WrongName {
        /// Expected node.
        expected: NodeName,
        /// Node actually reached.
        got: NodeName,
    },
    /// The requested channel/lane does not exist here.
    #[error("no lane {lane} on channel {channel} here")]
    UnknownLane {
        /// Requested channel.
        channel: ChannelName,
        /// Requested lane.
        lane: u16,
    },
    /// A node reached itself.
    #[error("connection to self")]
    SelfConnect,
    /// The peer has this node's name but is another node (another run): names must be unique
    /// in a cluster.
    #[error("another node is running as {0}: node names must be unique in a cluster")]
    NameInUse(NodeName),
    /// The peer runs another overlay.
    #[error("this node runs the {ours} overlay, the peer runs {theirs}: not the same cluster")]
    OverlayMismatch {
        /// Our overlay.
        ours: OverlayKind,
        /// Theirs.
        theirs: OverlayKind,
    },
    /// A message arrived out of order.
    #[error("unexpected handshake message: {0}")]
    Unexpected(&'static str),
    /// The peer refused us.
    #[error("refused by peer ({code:?}): {detail}")]
    Refused {
        /// Peer's reason.
        code: RefuseCode,
        /// Peer's detail.
        detail: String,
    },
}

impl HandshakeError {
    /// The refusal to send the peer for an error detected locally, if one should be sent.
    pub fn refusal(&self) -> Option<(RefuseCode, String)> {
        let code = match self {
            HandshakeError::NotPartisan | HandshakeError::Refused { .. } => return None,
            HandshakeError::Version { .. } => RefuseCode::Version,
            HandshakeError::Malformed(_) | HandshakeError::Unexpected(_) => RefuseCode::Protocol,
            HandshakeError::BadCookie => RefuseCode::BadCookie,
            HandshakeError::WrongName { .. } => RefuseCode::WrongName,
            HandshakeError::UnknownLane { .. } => RefuseCode::UnknownLane,
            HandshakeError::SelfConnect => RefuseCode::SelfConnect,
            HandshakeError::NameInUse(_) => RefuseCode::NameInUse,
            HandshakeError::OverlayMismatch { .. } => RefuseCode::OverlayMismatch,
        };
        // The detail is read by the peer: said from its side.
        let detail = match self {
            HandshakeError::Version { ours, theirs } => {
                format!(
                    "the peer speaks protocol version {ours}, this node speaks version {theirs}"
                )
            }
            HandshakeError::OverlayMismatch { ours, theirs } => format!(
                "the peer runs the {ours} overlay, this node runs {theirs}: not the same cluster"
            ),
            HandshakeError::UnknownLane { channel, lane } => {
                format!("the peer has no lane {lane} on channel {channel}")
            }
            other => other.to_string(),
        };
        Some((code, detail))
    }
}

/// Encodes one handshake frame (length prefix included).
pub fn encode(msg: &HandshakeMsg) -> Bytes {
    let body = postcard::to_allocvec(msg).expect("handshake messages always serialize");
    let mut out = BytesMut::with_capacity(4 + 6 + body.len());
    out.put_slice(&super::frame::len_prefix(6 + body.len()));
    out.put_slice(&MAGIC);
    out.put_u16(PROTOCOL_VERSION);
    out.put_slice(&body);
    out.freeze()
}

/// A refusal frame.
pub fn encode_refusal(code: RefuseCode, detail: impl Into<String>) -> Bytes {
    encode(&HandshakeMsg::Refused {
        code,
        detail: detail.into(),
    })
}

/// Decodes one handshake frame body. A refusal from a peer of another version still decodes.
pub fn decode(body: &[u8]) -> Result<HandshakeMsg, HandshakeError> {
    if body.len() < 6 || body[..4] != MAGIC {
        return Err(HandshakeError::NotPartisan);
    }
    let theirs = u16::from_be_bytes([body[4], body[5]]);
    let msg = match postcard::take_from_bytes::<HandshakeMsg>(&body[6..]) {
        Ok((m, [])) => Ok(m),
        Ok(_) => Err(postcard::Error::DeserializeBadEncoding),
        Err(e) => Err(e),
    };
    match (theirs == PROTOCOL_VERSION, msg) {
        // A refusal for our version, from a node of another version: say which.
        (
            false,
            Ok(HandshakeMsg::Refused {
                code: RefuseCode::Version,
                ..
            }),
        ) => Err(HandshakeError::Version {
            ours: PROTOCOL_VERSION,
            theirs,
        }),
        (_, Ok(HandshakeMsg::Refused { code, detail })) => Err(HandshakeError::Refused {
            code,
            detail: printable_detail(&detail),
        }),
        (true, Ok(m)) => Ok(m),
        (true, Err(e)) => Err(HandshakeError::Malformed(e.to_string())),
        (false, _) => Err(HandshakeError::Version {
            ours: PROTOCOL_VERSION,
            theirs,
        }),
    }
}

/// Longest refusal detail kept from a peer, in characters.
pub const MAX_REFUSAL_DETAIL: usize = 256;

/// A peer's refusal text as it may be logged: the peer is not authenticated when it refuses,
/// so its text is cut to [`MAX_REFUSAL_DETAIL`] characters and control characters (newlines,
/// terminal escapes) are replaced.
fn printable_detail(detail: &str) -> String {
    let mut out: String = detail
        .chars()
        .take(MAX_REFUSAL_DETAIL)
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect();
    if detail.chars().nth(MAX_REFUSAL_DETAIL).is_some() {
        out.push('…');
    }
    out
}

/// What a finished handshake established about the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerHello {
    /// Peer's identity.
    pub identity: Identity,
    /// Channel of the connection.
    pub channel: ChannelName,
    /// Lane of the connection.
    pub lane: u16,
}

impl PeerHello {
    /// Peer's spec.
    pub fn spec(&self) -> &NodeSpec {
        &self.identity.spec
    }

    /// Peer's creation.
    pub fn creation(&self) -> Creation {
        self.identity.creation
    }
}

/// Parameters of an outgoing connection.
#[derive(Debug, Clone)]
pub struct DialParams {
    /// Who we are.
    pub local: Identity,
    /// The node we mean to reach, if known; anyone else is refused.
    pub expect: Option<NodeName>,
    /// Channel of the connection.
    pub channel: ChannelName,
    /// Lane of the connection.
    pub lane: u16,
}

enum DialerState {
    AwaitChallenge,
    AwaitVerdict {
        peer: PeerHello,
        acceptor_nonce: Nonce,
    },
    Done,
}

/// Dialer side of the handshake.
pub struct Dialer {
    params: DialParams,
    cookie: Cookie,
    nonce: Nonce,
    state: DialerState,
    /// The overlay the acceptor announced in its challenge (not authenticated).
    peer_overlay: Option<OverlayKind>,
}

/// What the dialer does next.
#[derive(Debug)]
pub enum DialerStep {
    /// Send this frame and wait for the next one.
    Send(Bytes),
    /// The connection is admitted.
    Established(PeerHello),
}

impl Dialer {
    /// Starts a handshake; returns the state machine and the Hello frame to send.
    pub fn start(params: DialParams, cookie: Cookie, nonce: Nonce) -> (Dialer, Bytes) {
        let hello = encode(&HandshakeMsg::Hello {
            identity: params.local.clone(),
            expect: params.expect.clone(),
            channel: params.channel.clone(),
            lane: params.lane,
            nonce,
        });
        (
            Dialer {
                params,
                cookie,
                nonce,
                state: DialerState::AwaitChallenge,
                peer_overlay: None,
            },
            hello,
        )
    }

    /// The overlay the acceptor announced in its challenge, once it arrived. Not
    /// authenticated: good for explaining a refusal, not for deciding anything.
    pub fn peer_overlay(&self) -> Option<OverlayKind> {
        self.peer_overlay
    }

    /// `e` (returned by [`Dialer::on_frame`]) with what the dialer knows added: a peer's
    /// `NameInUse` refusal names this node's name, an `OverlayMismatch` refusal the overlay
    /// the peer announced. Call it after sending any refusal of `e`'s own: the typed error
    /// would otherwise be answered with a refusal the peer does not need.
    pub fn typed(&self, e: HandshakeError) -> HandshakeError {
        let local = &self.params.local;
        match (&e, self.peer_overlay) {
            (
                HandshakeError::Refused {
                    code: RefuseCode::NameInUse,
                    ..
                },
                _,
            ) => HandshakeError::NameInUse(local.spec.name().clone()),
            (
                HandshakeError::Refused {
                    code: RefuseCode::OverlayMismatch,
                    ..
                },
                Some(theirs),
            ) if theirs != local.overlay => HandshakeError::OverlayMismatch {
                ours: local.overlay,
                theirs,
            },
            _ => e,
        }
    }

    /// Feeds the next frame body received from the acceptor.
    pub fn on_frame(&mut self, body: &[u8]) -> Result<DialerStep, HandshakeError> {
        let msg = decode(body)?;
        match (std::mem::replace(&mut self.state, DialerState::Done), msg) {
            (DialerState::AwaitChallenge, HandshakeMsg::Challenge { identity, nonce }) => {
                self.peer_overlay = Some(identity.overlay);
                let local = &self.params.local;
                if let Some(expected) = &self.params.expect {
                    if expected != identity.spec.name() {
                        return Err(HandshakeError::WrongName {
                            expected: expected.clone(),
                            got: identity.spec.name().clone(),
                        });
                    }
                }
                if identity.spec.name() == local.spec.name() {
                    if identity.creation != local.creation {
                        return Err(HandshakeError::NameInUse(identity.spec.name().clone()));
                    }
                    return Err(HandshakeError::SelfConnect);
                }
                let peer = PeerHello {
                    identity,
                    channel: self.params.channel.clone(),
                    lane: self.params.lane,
                };
                let proof = self
                    .transcript(&peer, &nonce)
                    .prove(&self.cookie, Role::Dialer);
                self.state = DialerState::AwaitVerdict {
                    peer,
                    acceptor_nonce: nonce,
                };
                Ok(DialerStep::Send(encode(&HandshakeMsg::Response { proof })))
            }
            (
                DialerState::AwaitVerdict {
                    peer,
                    acceptor_nonce,
                },
                HandshakeMsg::Welcome { proof },
            ) => {
                if !self.transcript(&peer, &acceptor_nonce).verify(
                    &self.cookie,
                    Role::Acceptor,
                    &proof,
                ) {
                    return Err(HandshakeError::BadCookie);
                }
                let local = &self.params.local;
                if peer.identity.overlay != local.overlay {
                    return Err(HandshakeError::OverlayMismatch {
                        ours: local.overlay,
                        theirs: peer.identity.overlay,
                    });
                }
                Ok(DialerStep::Established(peer))
            }
            _ => Err(HandshakeError::Unexpected(
                "dialer got a message out of order",
            )),
        }
    }

    fn transcript<'a>(
        &'a self,
        peer: &'a PeerHello,
        acceptor_nonce: &'a Nonce,
    ) -> OwnedTranscript<'a> {
        OwnedTranscript {
            dialer: self.params.local.transcript_bytes(),
            acceptor: peer.identity.transcript_bytes(),
            channel: &self.params.channel,
            lane: self.params.lane,
            dialer_nonce: &self.nonce,
            acceptor_nonce,
        }
    }
}

/// A [`Transcript`] over identities encoded on the spot.
struct OwnedTranscript<'a> {
    dialer: Vec<u8>,
    acceptor: Vec<u8>,
    channel: &'a ChannelName,
    lane: u16,
    dialer_nonce: &'a Nonce,
    acceptor_nonce: &'a Nonce,
}

impl OwnedTranscript<'_> {
    fn view(&self) -> Transcript<'_> {
        Transcript {
            dialer: &self.dialer,
            acceptor: &self.acceptor,
            channel: self.channel,
            lane: self.lane,
            dialer_nonce: self.dialer_nonce,
            acceptor_nonce: self.acceptor_nonce,
        }
    }

    fn prove(&self, cookie: &Cookie, role: Role) -> Proof {
        self.view().prove(cookie, role)
    }

    fn verify(&self, cookie: &Cookie, role: Role, proof: &Proof) -> bool {
        self.view().verify(cookie, role, proof)
    }
}

/// Acceptor side of the handshake, after a valid Hello.
pub struct Acceptor {
    local: Vec<u8>,
    cookie: Cookie,
    nonce: Nonce,
    peer: PeerHello,
    peer_nonce: Nonce,
}

impl Acceptor {
    /// Handles the dialer's Hello; on success returns the state machine and the Challenge to
    /// send. On error, send [`HandshakeError::refusal`] (if any) and close.
    ///
    /// The overlay is checked only after the dialer proved it holds the cookie (in
    /// [`Acceptor::on_response`]), so a stranger learns nothing from the refusal; the
    /// challenge carries no proof, so a stranger gets nothing computed from the cookie.
    pub fn on_hello(
        local: &Identity,
        cookie: Cookie,
        nonce: Nonce,
        body: &[u8],
    ) -> Result<(Acceptor, Bytes), HandshakeError> {
        let HandshakeMsg::Hello {
            identity,
            expect,
            channel,
            lane,
            nonce: peer_nonce,
        } = decode(body)?
        else {
            return Err(HandshakeError::Unexpected("acceptor expected Hello"));
        };
        let own = local.spec.name();
        if let Some(expected) = expect {
            if &expected != own {
                return Err(HandshakeError::WrongName {
                    expected,
                    got: own.clone(),
                });
            }
        }
        if identity.spec.name() == own {
            if identity.creation != local.creation {
                return Err(HandshakeError::NameInUse(own.clone()));
            }
            return Err(HandshakeError::SelfConnect);
        }
        if !local.spec.has_lane(&channel, lane) {
            return Err(HandshakeError::UnknownLane { channel, lane });
        }
        let challenge = encode(&HandshakeMsg::Challenge {
            identity: local.clone(),
            nonce,
        });
        Ok((
            Acceptor {
                local: local.transcript_bytes(),
                cookie,
                nonce,
                peer: PeerHello {
                    identity,
                    channel,
                    lane,
                },
                peer_nonce,
            },
            challenge,
        ))
    }

    /// The dialer as it presented itself (not yet authenticated).
    pub fn peer(&self) -> &PeerHello {
        &self.peer
    }

    /// Handles the dialer's Response. On success the dialer is authenticated and runs the same
    /// overlay as `ours`; the caller then decides admission and sends the returned Welcome
    /// frame (which carries our proof) or a refusal.
    pub fn on_response(
        self,
        ours: OverlayKind,
        body: &[u8],
    ) -> Result<(PeerHello, Bytes), HandshakeError> {
        let HandshakeMsg::Response { proof } = decode(body)? else {
            return Err(HandshakeError::Unexpected("acceptor expected Response"));
        };
        let id = &self.peer.identity;
        let dialer = id.transcript_bytes();
        let t = Transcript {
            dialer: &dialer,
            acceptor: &self.local,
            channel: &self.peer.channel,
            lane: self.peer.lane,
            dialer_nonce: &self.peer_nonce,
            acceptor_nonce: &self.nonce,
        };
        if !t.verify(&self.cookie, Role::Dialer, &proof) {
            return Err(HandshakeError::BadCookie);
        }
        if id.overlay != ours {
            return Err(HandshakeError::OverlayMismatch {
                ours,
                theirs: id.overlay,
            });
        }
        let welcome = encode(&HandshakeMsg::Welcome {
            proof: t.prove(&self.cookie, Role::Acceptor),
        });
        Ok((self.peer, welcome))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::FrameDecoder;
    use std::collections::BTreeMap;

    fn spec(name: &str) -> NodeSpec {
        let mut ch = BTreeMap::new();
        ch.insert(
            ChannelName::new("data").unwrap(),
            crate::id::ChannelOpts::with_parallelism(4),
        );
        NodeSpec::new(
            NodeName::new(name).unwrap(),
            vec!["127.0.0.1:1".parse().unwrap()],
            ch,
        )
        .unwrap()
    }

    fn body(frame: &Bytes) -> Bytes {
        let mut b = BytesMut::from(&frame[..]);
        FrameDecoder::new(1 << 20).decode(&mut b).unwrap().unwrap()
    }

    fn ident(name: &str, creation: Creation, overlay: OverlayKind) -> Identity {
        Identity {
            spec: spec(name),
            creation,
            overlay,
            tag: None,
            max_frame: 1 << 20,
        }
    }

    fn dial(expect: Option<&str>, lane: u16) -> DialParams {
        DialParams {
            local: ident("a@h", 11, OverlayKind::FullMesh),
            expect: expect.map(|e| NodeName::new(e).unwrap()),
            channel: ChannelName::new("data").unwrap(),
            lane,
        }
    }

    fn run(
        dialer_cookie: &str,
        acceptor_cookie: &str,
        params: DialParams,
    ) -> Result<(PeerHello, PeerHello), HandshakeError> {
        run_with(
            dialer_cookie,
            acceptor_cookie,
            params,
            OverlayKind::FullMesh,
        )
    }

    fn run_with(
        dialer_cookie: &str,
        acceptor_cookie: &str,
        params: DialParams,
        acceptor_overlay: OverlayKind,
    ) -> Result<(PeerHello, PeerHello), HandshakeError> {
        let (mut d, hello) = Dialer::start(params, Cookie::new(dialer_cookie).unwrap(), [1; 32]);
        let (acc, challenge) = Acceptor::on_hello(
            &ident("b@h", 22, acceptor_overlay),
            Cookie::new(acceptor_cookie).unwrap(),
            [2; 32],
            &body(&hello),
        )?;
        let DialerStep::Send(resp) = d.on_frame(&body(&challenge))? else {
            panic!("dialer must answer the challenge")
        };
        let (dialer_seen, welcome) = acc.on_response(acceptor_overlay, &body(&resp))?;
        let DialerStep::Established(acceptor_seen) = d.on_frame(&body(&welcome))? else {
            panic!("dialer must be established after Welcome")
        };
        Ok((dialer_seen, acceptor_seen))
    }

    #[test]
    fn a_peers_refusal_text_is_cut_and_made_printable() {
        let long = format!("bad\n\x1b[31mred{}", "x".repeat(10_000));
        let frame = encode_refusal(RefuseCode::Protocol, long);
        let Err(HandshakeError::Refused { code, detail }) = decode(&body(&frame)) else {
            panic!("a refusal decodes as one")
        };
        assert_eq!(code, RefuseCode::Protocol);
        assert!(detail.starts_with("bad\u{fffd}\u{fffd}[31mred"), "{detail}");
        assert!(!detail.chars().any(char::is_control));
        assert_eq!(detail.chars().count(), MAX_REFUSAL_DETAIL + 1);
    }

    #[test]
    fn matching_cookies_establish_both_identities() {
        let (dialer, acceptor) = run("c", "c", dial(Some("b@h"), 3)).unwrap();
        assert_eq!(dialer.spec().name().as_str(), "a@h");
        assert_eq!((dialer.creation(), dialer.lane), (11, 3));
        assert_eq!(acceptor.spec().name().as_str(), "b@h");
        assert_eq!(acceptor.creation(), 22);
    }

    /// Runs Hello and Challenge; returns the dialer, the acceptor and the dialer's Response.
    fn half(
        params: DialParams,
        acceptor: &Identity,
        tamper: impl FnOnce(&mut Identity),
    ) -> (Dialer, Acceptor, Bytes) {
        let (mut d, hello) = Dialer::start(params, Cookie::new("c").unwrap(), [1; 32]);
        let (acc, challenge) =
            Acceptor::on_hello(acceptor, Cookie::new("c").unwrap(), [2; 32], &body(&hello))
                .unwrap();
        let Ok(HandshakeMsg::Challenge {
            mut identity,
            nonce,
        }) = decode(&body(&challenge))
        else {
            panic!("the acceptor answers Hello with a Challenge")
        };
        tamper(&mut identity);
        let challenge = encode(&HandshakeMsg::Challenge { identity, nonce });
        let DialerStep::Send(resp) = d.on_frame(&body(&challenge)).unwrap() else {
            panic!("dialer must answer the challenge")
        };
        (d, acc, resp)
    }

    #[test]
    fn a_second_node_with_a_name_in_use_is_told_apart_from_a_self_connection() {
        let hello = |creation| {
            let mut params = dial(None, 0);
            params.local = ident("b@h", creation, OverlayKind::FullMesh);
            let (_, hello) = Dialer::start(params, Cookie::new("c").unwrap(), [1; 32]);
            hello
        };
        let b = ident("b@h", 22, OverlayKind::FullMesh);
        let accept = |creation| {
            Acceptor::on_hello(
                &b,
                Cookie::new("c").unwrap(),
                [2; 32],
                &body(&hello(creation)),
            )
            .map(|_| ())
            .unwrap_err()
        };
        assert_eq!(accept(22), HandshakeError::SelfConnect);
        let in_use = accept(23);
        assert_eq!(
            in_use,
            HandshakeError::NameInUse(NodeName::new("b@h").unwrap())
        );
        assert_eq!(in_use.refusal().unwrap().0, RefuseCode::NameInUse);
        assert!(in_use
            .to_string()
            .contains("another node is running as b@h"));
    }

    #[test]
    fn refusal_details_are_said_from_the_side_that_reads_them() {
        // The acceptor runs HyParView and refuses a full-mesh dialer: the dialer reads that
        // the peer runs HyParView and it runs full mesh.
        let e = HandshakeError::OverlayMismatch {
            ours: OverlayKind::HyParView,
            theirs: OverlayKind::FullMesh,
        };
        let (code, detail) = e.refusal().unwrap();
        assert_eq!(code, RefuseCode::OverlayMismatch);
        assert!(
            detail.starts_with(&format!(
                "the peer runs the {} overlay, this node runs {}",
                OverlayKind::HyParView,
                OverlayKind::FullMesh
            )),
            "{detail}"
        );
        let (_, detail) = HandshakeError::Version { ours: 3, theirs: 2 }
            .refusal()
            .unwrap();
        assert_eq!(
            detail,
            "the peer speaks protocol version 3, this node speaks version 2"
        );
        let (_, detail) = HandshakeError::BadCookie.refusal().unwrap();
        assert!(detail.contains("different cookies"), "{detail}");
    }

    #[test]
    fn different_overlays_are_refused_by_both_sides() {
        // The acceptor checks the dialer's overlay once the dialer proved the cookie.
        assert_eq!(
            run_with("c", "c", dial(None, 0), OverlayKind::HyParView).unwrap_err(),
            HandshakeError::OverlayMismatch {
                ours: OverlayKind::HyParView,
                theirs: OverlayKind::FullMesh
            }
        );
        // The dialer checks the acceptor's overlay once the acceptor proved the cookie (here
        // an acceptor that admitted it anyway).
        let b = ident("b@h", 22, OverlayKind::Static);
        let (mut d, acc, resp) = half(dial(None, 0), &b, |_| {});
        let (_, welcome) = acc
            .on_response(OverlayKind::FullMesh, &body(&resp))
            .unwrap();
        assert_eq!(
            d.on_frame(&body(&welcome)).unwrap_err(),
            HandshakeError::OverlayMismatch {
                ours: OverlayKind::FullMesh,
                theirs: OverlayKind::Static
            }
        );
    }

    #[test]
    fn wrong_cookie_is_detected_by_the_acceptor_before_it_proves_anything() {
        assert_eq!(
            run("c1", "c2", dial(None, 0)).unwrap_err(),
            HandshakeError::BadCookie
        );
        // A stranger who connects gets a challenge with nothing computed from the cookie: the
        // same challenge whichever cookie the acceptor holds.
        let challenge = |cookie: &str| {
            let (_, hello) = Dialer::start(dial(None, 0), Cookie::new("x").unwrap(), [1; 32]);
            let b = ident("b@h", 22, OverlayKind::FullMesh);
            Acceptor::on_hello(&b, Cookie::new(cookie).unwrap(), [2; 32], &body(&hello))
                .unwrap()
                .1
        };
        assert_eq!(challenge("c1"), challenge("c2"));
    }

    #[test]
    fn a_forged_welcome_is_rejected_by_the_dialer() {
        let b = ident("b@h", 22, OverlayKind::FullMesh);
        let (mut d, _, _) = half(dial(None, 0), &b, |_| {});
        let forged = encode(&HandshakeMsg::Welcome { proof: [7; 32] });
        assert_eq!(
            d.on_frame(&body(&forged)).unwrap_err(),
            HandshakeError::BadCookie
        );
    }

    #[test]
    fn an_identity_altered_in_flight_fails_authentication() {
        let b = ident("b@h", 22, OverlayKind::FullMesh);
        // A man in the middle rewrites the acceptor's tag, addresses or frame limit: the
        // dialer's proof covers what it saw, so the acceptor rejects it.
        let tampers: [fn(&mut Identity); 3] = [
            |i| i.tag = Some(Tag::new("server").unwrap()),
            |i| i.max_frame = 64,
            |i| {
                let (name, ch) = (i.spec.name().clone(), i.spec.channels().clone());
                i.spec = NodeSpec::new(name, vec!["10.0.0.9:1".parse().unwrap()], ch).unwrap();
            },
        ];
        for tamper in tampers {
            let (_, acc, resp) = half(dial(None, 0), &b, tamper);
            assert_eq!(
                acc.on_response(OverlayKind::FullMesh, &body(&resp))
                    .unwrap_err(),
                HandshakeError::BadCookie
            );
        }
    }

    #[test]
    fn acceptor_refuses_wrong_name_and_unknown_lane() {
        assert!(matches!(
            run("c", "c", dial(Some("z@h"), 0)).unwrap_err(),
            HandshakeError::WrongName { .. }
        ));
        assert!(matches!(
            run("c", "c", dial(None, 4)).unwrap_err(),
            HandshakeError::UnknownLane { lane: 4, .. }
        ));
    }

    #[test]
    fn other_versions_are_reported_and_refusals_always_decode() {
        let mut frame = encode(&HandshakeMsg::Welcome { proof: [0; 32] }).to_vec();
        frame[8..10].copy_from_slice(&9u16.to_be_bytes());
        assert_eq!(
            decode(&frame[4..]).unwrap_err(),
            HandshakeError::Version {
                ours: PROTOCOL_VERSION,
                theirs: 9
            }
        );
        let mut refusal = encode_refusal(RefuseCode::BadCookie, "no").to_vec();
        refusal[8..10].copy_from_slice(&9u16.to_be_bytes());
        assert!(matches!(
            decode(&refusal[4..]).unwrap_err(),
            HandshakeError::Refused {
                code: RefuseCode::BadCookie,
                ..
            }
        ));
        assert_eq!(
            decode(b"GET / HTTP/1.1").unwrap_err(),
            HandshakeError::NotPartisan
        );
    }
}
