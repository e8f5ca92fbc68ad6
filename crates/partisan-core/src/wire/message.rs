//! Messages carried on an established connection.
//!
//! A frame body starts with one kind byte; the rest is kind-specific. User messages are a
//! postcard-encoded [`UserHeader`] followed by the raw payload, so a payload is never copied
//! on decode (it is a slice of the received frame) and need not be copied on encode either
//! (see [`encode_user_head`]). The sender's and receiver's nodes are implied by the connection,
//! which is bound to one incarnation of each side by the handshake, except in relayed
//! messages ([`RelayHeader`]), which name their origin and destination.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use super::frame::{len_prefix, LEN_PREFIX};
use crate::broadcast::BroadcastMsg;
use crate::id::{Creation, NodeName, ProcessName};
use crate::overlay::OverlayMsg;
use crate::signals::ProcessFrame;

const KIND_USER: u8 = 1;
const KIND_PING: u8 = 2;
const KIND_PONG: u8 = 3;
const KIND_GOODBYE: u8 = 4;
const KIND_CONTROL: u8 = 5;
const KIND_RELAY: u8 = 6;

/// Most hops a relayed message may take.
pub const MAX_RELAY_HOPS: u8 = 4;

/// Where on the receiving node a user message goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Target {
    /// The process with this id (the creation was checked by the sender against the peer's).
    Pid(u64),
    /// The process that registered this reference id as an alias.
    Ref(u64),
    /// The process registered under this name.
    Name(ProcessName),
}

/// Addressing part of a user message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserHeader {
    /// Destination on the receiving node.
    pub to: Target,
    /// Sending process id on the sending node, when sent from a process.
    pub from: Option<u64>,
}

/// Control traffic between the protocol engines of two nodes (never delivered to a process).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// A membership / overlay protocol message.
    Overlay(OverlayMsg),
    /// A Plumtree broadcast message of one handler.
    Broadcast(BroadcastMsg),
    /// A signal between processes of the two nodes (monitor, link, exit, liveness).
    Process(ProcessFrame),
    /// Peer liveness probing (a suspicion passed on).
    Liveness(crate::liveness::LivenessMsg),
}

/// Where a relayed message goes on its destination node; unlike [`Target`], pids and
/// references carry their creation, because the origin is not connected to the destination and
/// cannot check it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RelayTarget {
    /// A process.
    Pid {
        /// Creation the pid was minted in.
        creation: Creation,
        /// Process id.
        id: u64,
    },
    /// An alias reference.
    Ref {
        /// Creation the reference was minted in.
        creation: Creation,
        /// Reference id.
        id: u64,
    },
    /// A registered name.
    Name(ProcessName),
}

/// Addressing of a message relayed through intermediate nodes (a client-server overlay's
/// client to another client, through a server).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayHeader {
    /// Node that sent the message.
    pub origin: NodeName,
    /// Its creation.
    pub origin_creation: Creation,
    /// Node the message is for.
    pub dest: NodeName,
    /// Destination on that node.
    pub to: RelayTarget,
    /// Sending process id on the origin, when sent from a process.
    pub from: Option<u64>,
    /// Partition key, kept on every hop.
    pub partition_key: Option<u64>,
    /// Hops taken so far.
    pub hops: u8,
}

/// One decoded connection message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// An application message for a local process.
    User {
        /// Addressing.
        header: UserHeader,
        /// Opaque payload.
        payload: Bytes,
    },
    /// Keepalive probe; the receiver answers [`Message::Pong`] with the same id.
    Ping(u64),
    /// Keepalive answer.
    Pong(u64),
    /// The sender is closing this connection on purpose (shutdown or leave): not a failure.
    Goodbye,
    /// Control traffic for the receiving node's protocol engine.
    Control(Control),
    /// An application message travelling through this node (or ending here).
    Relay {
        /// Addressing.
        header: RelayHeader,
        /// Opaque payload.
        payload: Bytes,
    },
}

/// Why a frame body is not a valid message. The connection it came from is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The body is empty.
    #[error("empty frame")]
    Empty,
    /// The kind byte is not one this version knows.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// The kind-specific part does not decode.
    #[error("malformed {kind} message: {reason}")]
    Malformed {
        /// Which message kind.
        kind: &'static str,
        /// Decoder's explanation.
        reason: String,
    },
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The encoded message would exceed the frame limit.
    #[error("message of {len} bytes exceeds the {max}-byte frame limit")]
    TooLarge {
        /// Encoded body length.
        len: usize,
        /// Frame limit.
        max: usize,
    },
}

fn malformed(kind: &'static str, e: postcard::Error) -> DecodeError {
    DecodeError::Malformed {
        kind,
        reason: e.to_string(),
    }
}

impl Message {
    /// Decodes one frame body. Never panics; allocates at most what the body's size allows.
    pub fn decode(body: Bytes) -> Result<Message, DecodeError> {
        let (&kind, rest) = body.split_first().ok_or(DecodeError::Empty)?;
        match kind {
            KIND_USER => {
                let (header, used) = decode_user_header(rest)?;
                let start = 1 + used;
                Ok(Message::User {
                    header,
                    payload: body.slice(start..),
                })
            }
            KIND_PING | KIND_PONG => {
                let (id, tail) =
                    postcard::take_from_bytes::<u64>(rest).map_err(|e| malformed("ping", e))?;
                if !tail.is_empty() {
                    return Err(DecodeError::Malformed {
                        kind: "ping",
                        reason: "trailing bytes".into(),
                    });
                }
                Ok(if kind == KIND_PING {
                    Message::Ping(id)
                } else {
                    Message::Pong(id)
                })
            }
            KIND_GOODBYE if rest.is_empty() => Ok(Message::Goodbye),
            KIND_GOODBYE => Err(DecodeError::Malformed {
                kind: "goodbye",
                reason: "trailing bytes".into(),
            }),
            KIND_CONTROL => match postcard::take_from_bytes::<Control>(rest) {
                Ok((c, [])) => Ok(Message::Control(c)),
                Ok(_) => Err(DecodeError::Malformed {
                    kind: "control",
                    reason: "trailing bytes".into(),
                }),
                Err(e) => Err(malformed("control", e)),
            },
            KIND_RELAY => {
                let (header, tail) = postcard::take_from_bytes::<RelayHeader>(rest)
                    .map_err(|e| malformed("relay", e))?;
                let start = body.len() - tail.len();
                Ok(Message::Relay {
                    header,
                    payload: body.slice(start..),
                })
            }
            k => Err(DecodeError::UnknownKind(k)),
        }
    }

    /// Decodes a frame body if it is a user message, borrowing the payload from `body`
    /// (`None` for every other kind): for receivers that copy small payloads out of their read
    /// buffer instead of keeping a reference to it. Same verdicts as [`Message::decode`].
    pub fn decode_user(body: &[u8]) -> Option<Result<(UserHeader, &[u8]), DecodeError>> {
        let (&kind, rest) = body.split_first()?;
        if kind != KIND_USER {
            return None;
        }
        Some(decode_user_header(rest).map(|(header, used)| (header, &rest[used..])))
    }

    /// Appends this message as one complete frame (length prefix included) to `out`.
    pub fn encode_frame(
        &self,
        out: &mut BytesMut,
        max_frame_len: usize,
    ) -> Result<(), EncodeError> {
        match self {
            Message::User { header, payload } => {
                encode_user_head(out, header, payload.len(), max_frame_len)?;
                out.extend_from_slice(payload);
                Ok(())
            }
            Message::Ping(id) | Message::Pong(id) => {
                let kind = if matches!(self, Message::Ping(_)) {
                    KIND_PING
                } else {
                    KIND_PONG
                };
                let mut tmp = [0u8; 10];
                let enc = postcard::to_slice(id, &mut tmp).expect("a u64 varint fits 10 bytes");
                out.put_slice(&len_prefix(1 + enc.len()));
                out.put_u8(kind);
                out.put_slice(enc);
                Ok(())
            }
            Message::Goodbye => {
                out.put_slice(&len_prefix(1));
                out.put_u8(KIND_GOODBYE);
                Ok(())
            }
            Message::Control(c) => {
                let body = postcard::to_allocvec(c).expect("control messages always serialize");
                check_len(1 + body.len(), max_frame_len)?;
                out.put_slice(&len_prefix(1 + body.len()));
                out.put_u8(KIND_CONTROL);
                out.put_slice(&body);
                Ok(())
            }
            Message::Relay { header, payload } => {
                encode_relay_head(out, header, payload.len(), max_frame_len)?;
                out.extend_from_slice(payload);
                Ok(())
            }
        }
    }
}

fn check_len(body_len: usize, max: usize) -> Result<(), EncodeError> {
    if body_len > max {
        return Err(EncodeError::TooLarge { len: body_len, max });
    }
    Ok(())
}

/// Appends the length prefix, kind byte and header of a relayed message whose payload of
/// `payload_len` bytes the caller writes right after.
pub fn encode_relay_head(
    out: &mut BytesMut,
    header: &RelayHeader,
    payload_len: usize,
    max_frame_len: usize,
) -> Result<(), EncodeError> {
    let mut tmp = [0u8; 64 + 2 * crate::id::MAX_NODE_NAME_LEN + crate::id::MAX_PROCESS_NAME_LEN];
    let enc = postcard::to_slice(header, &mut tmp).expect("a relay header fits its bound");
    let body_len = 1 + enc.len() + payload_len;
    check_len(body_len, max_frame_len)?;
    out.reserve(super::frame::LEN_PREFIX + 1 + enc.len());
    out.put_slice(&len_prefix(body_len));
    out.put_u8(KIND_RELAY);
    out.put_slice(enc);
    Ok(())
}

/// Appends the length prefix, kind byte and header of a user message whose payload of
/// `payload_len` bytes the caller writes right after (or sends as a separate buffer).
///
/// The header is the postcard encoding of [`UserHeader`], written by hand: every message pays
/// for it, and the generic serializer cost several times more than the rest of the frame.
pub fn encode_user_head(
    out: &mut BytesMut,
    header: &UserHeader,
    payload_len: usize,
    max_frame_len: usize,
) -> Result<(), EncodeError> {
    let (variant, id_or_len, name): (u8, u64, &[u8]) = match &header.to {
        Target::Pid(id) => (0, *id, &[]),
        Target::Ref(id) => (1, *id, &[]),
        Target::Name(n) => (2, n.as_str().len() as u64, n.as_str().as_bytes()),
    };
    // Prefix, kind, variant and id (or name length); then the sender: one copy into `out` for
    // a pid or reference.
    let mut head = [0u8; LEN_PREFIX + 2 + 10];
    head[LEN_PREFIX] = KIND_USER;
    head[LEN_PREFIX + 1] = variant;
    let a = LEN_PREFIX + 2 + write_varint(&mut head[LEN_PREFIX + 2..], id_or_len);
    let mut tail = [0u8; 11];
    let b = match header.from {
        None => 1,
        Some(id) => {
            tail[0] = 1;
            1 + write_varint(&mut tail[1..], id)
        }
    };
    let body_len = (a - LEN_PREFIX) + name.len() + b + payload_len;
    if body_len > max_frame_len {
        return Err(EncodeError::TooLarge {
            len: body_len,
            max: max_frame_len,
        });
    }
    head[..LEN_PREFIX].copy_from_slice(&len_prefix(body_len));
    if name.is_empty() {
        let mut all = [0u8; LEN_PREFIX + 2 + 10 + 11];
        all[..a].copy_from_slice(&head[..a]);
        all[a..a + b].copy_from_slice(&tail[..b]);
        out.extend_from_slice(&all[..a + b]);
    } else {
        out.reserve(a + name.len() + b);
        out.extend_from_slice(&head[..a]);
        out.extend_from_slice(name);
        out.extend_from_slice(&tail[..b]);
    }
    Ok(())
}

/// Writes `v` as a postcard (LEB128) varint at the start of `out` (at least ten bytes);
/// returns its length.
fn write_varint(out: &mut [u8], mut v: u64) -> usize {
    let mut i = 0;
    while v >= 0x80 {
        out[i] = (v as u8) | 0x80;
        v >>= 7;
        i += 1;
    }
    out[i] = v as u8;
    i + 1
}

/// Reads a varint of at most nine bytes (values below 2^63) off the front of `buf`; `None`
/// when it is longer or cut short, for the generic decoder to judge. Accepts exactly what
/// postcard accepts for those lengths, with the same value.
fn take_short_varint(buf: &[u8]) -> Option<(u64, usize)> {
    let mut out = 0u64;
    for (i, &b) in buf.iter().take(9).enumerate() {
        out |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((out, i + 1));
        }
    }
    None
}

/// Decodes a [`UserHeader`] off the front of `buf`; returns it and the bytes it took.
///
/// Pids and references with or without a sender (every message between processes) are read
/// by hand; anything else (a registered name, an unusual encoding, an error) goes through
/// postcard, which has the last word on what is valid.
fn decode_user_header(buf: &[u8]) -> Result<(UserHeader, usize), DecodeError> {
    let fast = || {
        let variant = *buf.first()?;
        if variant > 1 {
            return None;
        }
        let (id, a) = take_short_varint(&buf[1..])?;
        let at = 1 + a;
        let (from, used) = match *buf.get(at)? {
            0 => (None, at + 1),
            1 => {
                let (f, b) = take_short_varint(&buf[at + 1..])?;
                (Some(f), at + 1 + b)
            }
            _ => return None,
        };
        let to = if variant == 0 {
            Target::Pid(id)
        } else {
            Target::Ref(id)
        };
        Some((UserHeader { to, from }, used))
    };
    if let Some(r) = fast() {
        return Ok(r);
    }
    let (header, tail) =
        postcard::take_from_bytes::<UserHeader>(buf).map_err(|e| malformed("user", e))?;
    Ok((header, buf.len() - tail.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::FrameDecoder;
    use proptest::prelude::*;

    fn round_trip(m: Message) {
        let mut buf = BytesMut::new();
        m.encode_frame(&mut buf, 1 << 20).unwrap();
        let body = FrameDecoder::new(1 << 20)
            .decode(&mut buf)
            .unwrap()
            .unwrap();
        assert_eq!(Message::decode(body).unwrap(), m);
        assert!(buf.is_empty());
    }

    #[test]
    fn every_kind_round_trips() {
        round_trip(Message::Ping(u64::MAX));
        round_trip(Message::Pong(0));
        round_trip(Message::Goodbye);
        round_trip(Message::Control(Control::Overlay(OverlayMsg::Static(
            crate::overlay::StaticMsg::Leaving,
        ))));
        round_trip(Message::Relay {
            header: RelayHeader {
                origin: NodeName::new("c1@h").unwrap(),
                origin_creation: 7,
                dest: NodeName::new("c2@h").unwrap(),
                to: RelayTarget::Name(ProcessName::new("inbox").unwrap()),
                from: Some(3),
                partition_key: Some(9),
                hops: 1,
            },
            payload: Bytes::from_static(b"via a server"),
        });
        round_trip(Message::User {
            header: UserHeader {
                to: Target::Name(ProcessName::new("x".repeat(255).as_str()).unwrap()),
                from: Some(u64::MAX),
            },
            payload: Bytes::from_static(b"hello"),
        });
        round_trip(Message::User {
            header: UserHeader {
                to: Target::Pid(7),
                from: None,
            },
            payload: Bytes::new(),
        });
    }

    #[test]
    fn oversized_user_message_is_refused_at_encode() {
        let mut buf = BytesMut::new();
        let h = UserHeader {
            to: Target::Ref(1),
            from: None,
        };
        assert!(matches!(
            encode_user_head(&mut buf, &h, 100, 50),
            Err(EncodeError::TooLarge { .. })
        ));
        assert!(buf.is_empty());
    }

    fn user_headers() -> impl Strategy<Value = UserHeader> {
        let id = prop_oneof![any::<u64>(), 0u64..300, Just(u64::MAX), Just(1u64 << 63)];
        let to = prop_oneof![
            id.clone().prop_map(Target::Pid),
            id.clone().prop_map(Target::Ref),
            "[a-z_]{1,200}".prop_map(|n| Target::Name(ProcessName::new(&n).unwrap())),
        ];
        (to, proptest::option::of(id)).prop_map(|(to, from)| UserHeader { to, from })
    }

    proptest! {
        #[test]
        fn the_hand_written_header_codec_is_postcard(h in user_headers(), len in 0usize..100) {
            let mut buf = BytesMut::new();
            encode_user_head(&mut buf, &h, len, 1 << 20).unwrap();
            let enc = postcard::to_allocvec(&h).unwrap();
            prop_assert_eq!(&buf[LEN_PREFIX + 1..], &enc[..]);
            prop_assert_eq!(decode_user_header(&enc), Ok((h.clone(), enc.len())));
        }

        #[test]
        fn header_decoding_agrees_with_postcard_on_any_bytes(
            bytes in proptest::collection::vec(
                prop_oneof![any::<u8>(), Just(0x80u8), Just(0xffu8), Just(0u8), Just(1u8)],
                0..24,
            ),
        ) {
            let ours = decode_user_header(&bytes).ok();
            let theirs = postcard::take_from_bytes::<UserHeader>(&bytes)
                .ok()
                .map(|(h, tail)| (h, bytes.len() - tail.len()));
            prop_assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn header_decoding_accepts_what_postcard_accepts() {
        // Overlong varints are valid postcard; a tenth varint byte is left to postcard.
        let cases: [&[u8]; 4] = [
            &[0x80, 0x00, 0x00],
            &[0x01, 0x80, 0x80, 0x00, 0x01, 0x05],
            &[
                0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x00,
            ],
            &[0x00, 0x01, 0x02],
        ];
        for c in cases {
            let theirs = postcard::take_from_bytes::<UserHeader>(c)
                .ok()
                .map(|(h, tail)| (h, c.len() - tail.len()));
            assert_eq!(decode_user_header(c).ok(), theirs, "{c:?}");
        }
    }

    #[test]
    fn decode_user_borrows_what_decode_slices() {
        let m = Message::User {
            header: UserHeader {
                to: Target::Ref(300),
                from: Some(5),
            },
            payload: Bytes::from_static(b"payload"),
        };
        let mut buf = BytesMut::new();
        m.encode_frame(&mut buf, 1 << 20).unwrap();
        let body = &buf[LEN_PREFIX..];
        let Message::User { header, payload } =
            Message::decode(Bytes::copy_from_slice(body)).unwrap()
        else {
            panic!("not a user message");
        };
        assert_eq!(Message::decode_user(body), Some(Ok((header, &payload[..]))));
        assert_eq!(Message::decode_user(&[KIND_PING, 0]), None);
        assert!(matches!(
            Message::decode_user(&[KIND_USER, 9]),
            Some(Err(_))
        ));
        assert_eq!(Message::decode_user(&[]), None);
    }

    #[test]
    fn garbage_is_an_error() {
        assert_eq!(Message::decode(Bytes::new()), Err(DecodeError::Empty));
        assert_eq!(
            Message::decode(Bytes::from_static(&[99])),
            Err(DecodeError::UnknownKind(99))
        );
        assert!(Message::decode(Bytes::from_static(&[KIND_USER, 9])).is_err());
        assert!(Message::decode(Bytes::from_static(&[KIND_GOODBYE, 0])).is_err());
    }
}
