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

use super::frame::len_prefix;
use crate::id::{Creation, NodeName, ProcessName};
use crate::overlay::OverlayMsg;

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
                let (header, tail) = postcard::take_from_bytes::<UserHeader>(rest)
                    .map_err(|e| malformed("user", e))?;
                let start = body.len() - tail.len();
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
pub fn encode_user_head(
    out: &mut BytesMut,
    header: &UserHeader,
    payload_len: usize,
    max_frame_len: usize,
) -> Result<(), EncodeError> {
    let mut tmp = [0u8; 16 + crate::id::MAX_PROCESS_NAME_LEN];
    let enc = postcard::to_slice(header, &mut tmp).expect("a user header fits its bound");
    let body_len = 1 + enc.len() + payload_len;
    if body_len > max_frame_len {
        return Err(EncodeError::TooLarge {
            len: body_len,
            max: max_frame_len,
        });
    }
    out.reserve(super::frame::LEN_PREFIX + 1 + enc.len());
    out.put_slice(&len_prefix(body_len));
    out.put_u8(KIND_USER);
    out.put_slice(enc);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::FrameDecoder;

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
