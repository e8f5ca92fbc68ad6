//! Property tests of the wire format and the identities that cross it.
//!
//! Round trips: connection messages (every control message, process signals with exit reasons
//! of any length among them), handshake messages, remote-reference URIs and node specs.
//! Robustness: every decoder returns `Ok` or `Err` on arbitrary bytes, and the frame decoder
//! recovers exactly the encoded frames however the byte stream is split into reads.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use bytes::{Bytes, BytesMut};
use partisan_core::auth::{Cookie, NONCE_LEN, PROOF_LEN};
use partisan_core::broadcast::{Announcement, BroadcastBody, BroadcastMsg};
use partisan_core::id::{
    ChannelName, ChannelOpts, NodeName, NodeSpec, Pid, ProcessName, Ref, RegisteredName, RemoteRef,
    MAX_PARALLELISM, MAX_PROCESS_NAME_LEN,
};
use partisan_core::overlay::{
    CsMsg, HvMsg, OverlayKind, OverlayMsg, PeerInfo, Role, StaticMsg, Tag,
};
use partisan_core::signals::{ExitReason, ProcessFrame, ProcessMsg, MAX_REASON_LEN};
use partisan_core::wire::frame::len_prefix;
use partisan_core::wire::handshake::{
    self, Acceptor, HandshakeError, HandshakeMsg, Identity, RefuseCode, MAGIC, PROTOCOL_VERSION,
};
use partisan_core::wire::{
    Control, FrameDecoder, Message, RelayHeader, RelayTarget, Target, UserHeader,
    DEFAULT_MAX_FRAME_LEN, LEN_PREFIX,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

fn node_name() -> impl Strategy<Value = NodeName> {
    "[A-Za-z0-9_.-]{1,20}@[A-Za-z0-9_.-]{1,20}".prop_map(|s| NodeName::new(&s).unwrap())
}

fn channel_name() -> impl Strategy<Value = ChannelName> {
    prop_oneof![
        1 => Just(ChannelName::default_channel()),
        1 => Just(ChannelName::membership()),
        6 => "[A-Za-z0-9_.-]{1,64}".prop_map(|s| ChannelName::new(&s).unwrap()),
    ]
}

/// One character allowed in a registered process name: no whitespace, no control character.
fn process_name_char() -> impl Strategy<Value = char> {
    prop_oneof![
        // Printable ASCII, which includes ':' (the URI separator) and '%', '/', '@' ...
        4 => proptest::char::range('!', '~'),
        1 => Just(':'),
        // Anything else Unicode, from 2-byte to 4-byte encodings.
        2 => any::<char>(),
    ]
    .prop_filter("no whitespace or control characters", |c| {
        !c.is_whitespace() && !c.is_control()
    })
}

/// Valid process names of 1 to 255 bytes; about a quarter of them are exactly 255 bytes long.
fn process_name() -> impl Strategy<Value = ProcessName> {
    (
        proptest::collection::vec(process_name_char(), 1..=MAX_PROCESS_NAME_LEN),
        prop::bool::weighted(0.25),
    )
        .prop_map(|(chars, pad_to_limit)| {
            let mut s = String::new();
            for c in chars {
                if s.len() + c.len_utf8() > MAX_PROCESS_NAME_LEN {
                    break;
                }
                s.push(c);
            }
            if pad_to_limit {
                while s.len() < MAX_PROCESS_NAME_LEN {
                    s.push('x');
                }
            }
            ProcessName::new(&s).unwrap()
        })
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        any::<u64>().prop_map(Target::Pid),
        any::<u64>().prop_map(Target::Ref),
        process_name().prop_map(Target::Name),
    ]
}

fn user_header() -> impl Strategy<Value = UserHeader> {
    (target(), any::<Option<u64>>()).prop_map(|(to, from)| UserHeader { to, from })
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        6 => (user_header(), proptest::collection::vec(any::<u8>(), 0..4096)).prop_map(
            |(header, payload)| Message::User {
                header,
                payload: Bytes::from(payload),
            }
        ),
        1 => any::<u64>().prop_map(Message::Ping),
        1 => any::<u64>().prop_map(Message::Pong),
        1 => Just(Message::Goodbye),
        2 => control().prop_map(Message::Control),
        3 => (relay_header(), proptest::collection::vec(any::<u8>(), 0..1024)).prop_map(
            |(header, payload)| Message::Relay {
                header,
                payload: Bytes::from(payload),
            }
        ),
    ]
}

fn relay_header() -> impl Strategy<Value = RelayHeader> {
    let to = prop_oneof![
        (any::<u64>(), any::<u64>()).prop_map(|(creation, id)| RelayTarget::Pid { creation, id }),
        (any::<u64>(), any::<u64>()).prop_map(|(creation, id)| RelayTarget::Ref { creation, id }),
        process_name().prop_map(RelayTarget::Name),
    ];
    (
        node_name(),
        any::<u64>(),
        node_name(),
        to,
        any::<Option<u64>>(),
        any::<Option<u64>>(),
        any::<u8>(),
    )
        .prop_map(
            |(origin, origin_creation, dest, to, from, partition_key, hops)| RelayHeader {
                origin,
                origin_creation,
                dest,
                to,
                from,
                partition_key,
                hops,
            },
        )
}

fn peer_info() -> impl Strategy<Value = PeerInfo> {
    identity().prop_map(|i| PeerInfo {
        spec: i.spec,
        creation: i.creation,
        tag: i.tag,
    })
}

fn control() -> impl Strategy<Value = Control> {
    let hv = prop_oneof![
        peer_info().prop_map(|peer| HvMsg::Join { peer }),
        (peer_info(), any::<u8>()).prop_map(|(peer, ttl)| HvMsg::ForwardJoin { peer, ttl }),
        Just(HvMsg::ForwardJoinAccepted),
        any::<bool>().prop_map(|high| HvMsg::NeighborRequest { high }),
        any::<bool>().prop_map(|accepted| HvMsg::NeighborReply { accepted }),
        Just(HvMsg::Disconnect),
        proptest::collection::vec(peer_info(), 0..4).prop_map(|handover| HvMsg::Leave { handover }),
        (
            peer_info(),
            any::<u8>(),
            proptest::collection::vec(peer_info(), 0..4)
        )
            .prop_map(|(origin, ttl, sample)| HvMsg::Shuffle {
                origin,
                ttl,
                sample
            }),
        proptest::collection::vec(peer_info(), 0..4)
            .prop_map(|sample| HvMsg::ShuffleReply { sample }),
        Just(HvMsg::KeepActive),
    ];
    let cs = prop_oneof![
        Just(CsMsg::Hello { role: Role::Client }),
        proptest::collection::vec((peer_info(), Just(Role::Server)), 0..3).prop_map(|members| {
            CsMsg::Welcome {
                role: Role::Server,
                members,
            }
        }),
        peer_info().prop_map(|peer| CsMsg::Announce {
            peer,
            role: Role::Client
        }),
        any::<String>().prop_map(|reason| CsMsg::Refused { reason }),
        Just(CsMsg::Leaving),
        node_name().prop_map(|node| CsMsg::Removed { node }),
    ];
    let bytes = || proptest::collection::vec(any::<u8>(), 0..64);
    let body =
        prop_oneof![
            (bytes(), bytes(), node_name(), any::<u32>()).prop_map(|(id, payload, root, round)| {
                BroadcastBody::Gossip {
                    id,
                    payload,
                    root,
                    round,
                }
            }),
            proptest::collection::vec(
                (bytes(), node_name(), any::<u32>()).prop_map(|(id, root, round)| Announcement {
                    id,
                    root,
                    round
                }),
                0..4
            )
            .prop_map(BroadcastBody::IHave),
            (node_name(), any::<bool>())
                .prop_map(|(root, shortcut)| BroadcastBody::Prune { root, shortcut }),
            (bytes(), node_name(), any::<u32>())
                .prop_map(|(id, root, round)| BroadcastBody::Graft { id, root, round }),
            (any::<u64>(), any::<bool>(), bytes()).prop_map(|(session, from_initiator, data)| {
                BroadcastBody::Exchange {
                    session,
                    from_initiator,
                    data,
                }
            }),
        ];
    let broadcast = ("[a-z]{1,8}", body)
        .prop_map(|(handler, body)| Control::Broadcast(BroadcastMsg { handler, body }));
    prop_oneof![
        hv.prop_map(|m| Control::Overlay(OverlayMsg::HyParView(m))),
        cs.prop_map(|m| Control::Overlay(OverlayMsg::ClientServer(m))),
        Just(Control::Overlay(OverlayMsg::Static(StaticMsg::Leaving))),
        broadcast,
        process_frame().prop_map(Control::Process),
    ]
}

/// Reason texts: short ones of any characters, and long ones up to and past
/// [`MAX_REASON_LEN`] (one character repeated, 1 to 4 bytes each).
fn reason_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => any::<String>(),
        1 => (any::<char>(), 0..=MAX_REASON_LEN + 8)
            .prop_map(|(c, bytes)| std::iter::repeat_n(c, bytes / c.len_utf8()).collect()),
    ]
}

/// Every exit reason: the texts as made by the constructors (cut to the limit) or built
/// directly (longer ones too).
fn exit_reason() -> impl Strategy<Value = ExitReason> {
    prop_oneof![
        Just(ExitReason::Normal),
        Just(ExitReason::Shutdown),
        Just(ExitReason::Kill),
        Just(ExitReason::Killed),
        Just(ExitReason::NoProc),
        Just(ExitReason::NoConnection),
        reason_text().prop_map(ExitReason::panic),
        reason_text().prop_map(ExitReason::error),
        reason_text().prop_map(ExitReason::Panic),
        reason_text().prop_map(ExitReason::Error),
    ]
}

/// Every process signal.
fn process_msg() -> impl Strategy<Value = ProcessMsg> {
    prop_oneof![
        (any::<u64>(), any::<u64>(), target()).prop_map(|(monitor, watcher, target)| {
            ProcessMsg::Monitor {
                monitor,
                watcher,
                target,
            }
        }),
        any::<u64>().prop_map(|monitor| ProcessMsg::Demonitor { monitor }),
        (any::<u64>(), exit_reason())
            .prop_map(|(monitor, reason)| ProcessMsg::Down { monitor, reason }),
        (any::<u64>(), any::<u64>()).prop_map(|(from, to)| ProcessMsg::Link { from, to }),
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(from, to, id)| ProcessMsg::Unlink {
            from,
            to,
            id
        }),
        (any::<u64>(), any::<u64>(), any::<u64>())
            .prop_map(|(from, to, id)| ProcessMsg::UnlinkAck { from, to, id }),
        (
            any::<Option<u64>>(),
            any::<u64>(),
            exit_reason(),
            any::<bool>()
        )
            .prop_map(|(from, to, reason, link)| ProcessMsg::Exit {
                from,
                to,
                reason,
                link
            }),
        (any::<u64>(), any::<u64>()).prop_map(|(query, pid)| ProcessMsg::IsAlive { query, pid }),
        (any::<u64>(), any::<bool>()).prop_map(|(query, alive)| ProcessMsg::Alive { query, alive }),
    ]
}

/// Session numbers: mostly small (as they are), sometimes any.
fn session() -> impl Strategy<Value = u64> {
    prop_oneof![3 => 0u64..4, 1 => any::<u64>()]
}

/// Every process frame: the sessions, and a signal or none.
fn process_frame() -> impl Strategy<Value = ProcessFrame> {
    (
        session(),
        session(),
        session(),
        prop::option::of(process_msg()),
    )
        .prop_map(|(session, heard, start, msg)| ProcessFrame {
            session,
            heard,
            start,
            msg,
        })
}

/// The first bytes of a control message carrying a process frame with zero sessions
/// (message kind, `Control` variant, the three sessions, `Some`, `ProcessMsg` variant), so that
/// noise reaches the signal decoder.
fn process_prefixes() -> Vec<Vec<u8>> {
    let mut prefixes = vec![vec![5], vec![5, 2], vec![5, 2, 0, 0, 0, 0]];
    prefixes.extend((0u8..9).map(|k| vec![5, 2, 0, 0, 0, 1, k]));
    prefixes
}

/// Socket addresses as serde can carry them: IPv6 flow info and scope id are not serialized
/// by serde's `SocketAddrV6` impl, so they are left at zero here.
fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<u32>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port))),
        (any::<u128>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(ip),
            port,
            0,
            0
        ))),
        // A few fixed ones, so that duplicates (removed by the spec) actually occur.
        Just("127.0.0.1:4370".parse().unwrap()),
        Just("[::1]:4370".parse().unwrap()),
    ]
}

fn channel_opts() -> impl Strategy<Value = ChannelOpts> {
    (1..=MAX_PARALLELISM, any::<bool>()).prop_map(|(parallelism, monotonic)| ChannelOpts {
        parallelism,
        monotonic,
    })
}

fn node_spec() -> impl Strategy<Value = NodeSpec> {
    (
        node_name(),
        proptest::collection::vec(socket_addr(), 0..=10),
        proptest::collection::btree_map(channel_name(), channel_opts(), 0..=5),
    )
        .prop_map(|(name, addrs, channels)| NodeSpec::new(name, addrs, channels).unwrap())
}

fn refuse_code() -> impl Strategy<Value = RefuseCode> {
    prop_oneof![
        Just(RefuseCode::Version),
        Just(RefuseCode::BadCookie),
        Just(RefuseCode::WrongName),
        Just(RefuseCode::UnknownLane),
        Just(RefuseCode::SelfConnect),
        Just(RefuseCode::NameInUse),
        Just(RefuseCode::Simultaneous),
        Just(RefuseCode::StaleCreation),
        Just(RefuseCode::ShuttingDown),
        Just(RefuseCode::Protocol),
        Just(RefuseCode::OverlayMismatch),
    ]
}

fn handshake_msg() -> impl Strategy<Value = HandshakeMsg> {
    prop_oneof![
        (refuse_code(), any::<String>())
            .prop_map(|(code, detail)| HandshakeMsg::Refused { code, detail }),
        (
            identity(),
            proptest::option::of(node_name()),
            channel_name(),
            any::<u16>(),
            any::<[u8; NONCE_LEN]>(),
        )
            .prop_map(|(identity, expect, channel, lane, nonce)| {
                HandshakeMsg::Hello {
                    identity,
                    expect,
                    channel,
                    lane,
                    nonce,
                }
            }),
        (identity(), any::<[u8; NONCE_LEN]>())
            .prop_map(|(identity, nonce)| HandshakeMsg::Challenge { identity, nonce }),
        any::<[u8; PROOF_LEN]>().prop_map(|proof| HandshakeMsg::Response { proof }),
        any::<[u8; PROOF_LEN]>().prop_map(|proof| HandshakeMsg::Welcome { proof }),
    ]
}

fn remote_ref() -> impl Strategy<Value = RemoteRef> {
    prop_oneof![
        (node_name(), any::<u64>(), any::<u64>())
            .prop_map(|(node, creation, id)| RemoteRef::Pid(Pid { node, creation, id })),
        (node_name(), any::<u64>(), any::<u64>())
            .prop_map(|(node, creation, id)| RemoteRef::Ref(Ref { node, creation, id })),
        (node_name(), process_name())
            .prop_map(|(node, name)| RemoteRef::Name(RegisteredName { node, name })),
    ]
}

/// Bytes that are arbitrary, or start like the thing being decoded (so that decoders get past
/// their first checks and into the interesting parts).
fn noise_with_prefix(prefixes: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let n = prefixes.len();
    (
        proptest::option::of(0..n),
        proptest::collection::vec(any::<u8>(), 0..512),
    )
        .prop_map(move |(which, tail)| {
            let mut out = which.map(|i| prefixes[i].clone()).unwrap_or_default();
            out.extend_from_slice(&tail);
            out
        })
}

fn handshake_prefix() -> Vec<u8> {
    let mut p = MAGIC.to_vec();
    p.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    p
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn decode_one_frame(buf: &mut BytesMut) -> Bytes {
    FrameDecoder::new(DEFAULT_MAX_FRAME_LEN)
        .decode(buf)
        .expect("frame within the limit")
        .expect("a complete frame")
}

/// Frames `bodies` and returns the byte stream.
fn frame_stream(bodies: &[Vec<u8>]) -> Vec<u8> {
    let mut wire = Vec::new();
    for b in bodies {
        wire.extend_from_slice(&len_prefix(b.len()));
        wire.extend_from_slice(b);
    }
    wire
}

/// Cuts `wire` into consecutive chunks at the given positions (taken modulo the length).
fn split_at_points(wire: &[u8], mut cuts: Vec<usize>) -> Vec<&[u8]> {
    if wire.is_empty() {
        return vec![wire];
    }
    for c in &mut cuts {
        *c %= wire.len() + 1;
    }
    cuts.push(0);
    cuts.push(wire.len());
    cuts.sort_unstable();
    cuts.dedup();
    cuts.windows(2).map(|w| &wire[w[0]..w[1]]).collect()
}

fn overlay_kind() -> impl Strategy<Value = OverlayKind> {
    prop_oneof![
        Just(OverlayKind::FullMesh),
        Just(OverlayKind::HyParView),
        Just(OverlayKind::ClientServer),
        Just(OverlayKind::Static),
    ]
}

fn identity() -> impl Strategy<Value = Identity> {
    (
        node_spec(),
        any::<u64>(),
        overlay_kind(),
        proptest::option::of("[a-z0-9_.-]{1,12}"),
        any::<u32>(),
    )
        .prop_map(|(spec, creation, overlay, tag, max_frame)| Identity {
            spec,
            creation,
            overlay,
            tag: tag.map(|t| Tag::new(&t).unwrap()),
            max_frame,
        })
}

fn local_identity() -> Identity {
    Identity {
        spec: local_spec(),
        creation: 7,
        overlay: OverlayKind::FullMesh,
        tag: None,
        max_frame: 1 << 20,
    }
}

fn local_spec() -> NodeSpec {
    let mut ch = BTreeMap::new();
    ch.insert(
        ChannelName::new("data").unwrap(),
        ChannelOpts::with_parallelism(4),
    );
    NodeSpec::new(
        NodeName::new("local@host").unwrap(),
        vec!["127.0.0.1:4370".parse().unwrap()],
        ch,
    )
    .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------------

proptest! {
    #[test]
    fn message_round_trips_through_a_frame(m in message()) {
        let mut buf = BytesMut::new();
        m.encode_frame(&mut buf, DEFAULT_MAX_FRAME_LEN).unwrap();
        let body = decode_one_frame(&mut buf);
        prop_assert!(buf.is_empty(), "the frame must be consumed whole");
        prop_assert_eq!(Message::decode(body).unwrap(), m);
    }

    #[test]
    fn process_signals_round_trip_through_a_frame(p in process_frame()) {
        let zero = p.session == 0 && p.heard == 0 && p.start == 0 && p.msg.is_some();
        let m = Message::Control(Control::Process(p));
        let mut buf = BytesMut::new();
        m.encode_frame(&mut buf, DEFAULT_MAX_FRAME_LEN).unwrap();
        let body = decode_one_frame(&mut buf);
        prop_assert!(buf.is_empty(), "the frame must be consumed whole");
        // What `process_prefixes` assumes.
        if zero {
            prop_assert!(process_prefixes().iter().any(|p| p.len() == 7 && body.starts_with(p)));
        }
        prop_assert_eq!(Message::decode(body).unwrap(), m);
    }

    #[test]
    fn reasons_made_by_the_constructors_stay_within_the_limit(text in reason_text()) {
        for r in [ExitReason::error(text.clone()), ExitReason::panic(text.clone())] {
            let (ExitReason::Error(t) | ExitReason::Panic(t)) = &r else { unreachable!() };
            prop_assert!(t.len() <= MAX_REASON_LEN);
            prop_assert!(text.starts_with(t.as_str()));
            prop_assert!(t.len() == text.len() || text.len() > MAX_REASON_LEN);
        }
    }

    #[test]
    fn a_stream_of_messages_round_trips_in_order(
        msgs in proptest::collection::vec(message(), 0..8),
        prefill in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        // Encoding appends: bytes already in the buffer are left alone.
        let mut buf = BytesMut::from(&prefill[..]);
        for m in &msgs {
            m.encode_frame(&mut buf, DEFAULT_MAX_FRAME_LEN).unwrap();
        }
        prop_assert_eq!(&buf[..prefill.len()], &prefill[..]);
        let _ = buf.split_to(prefill.len());
        let d = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
        let mut out = Vec::new();
        while let Some(body) = d.decode(&mut buf).unwrap() {
            out.push(Message::decode(body).unwrap());
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(out, msgs);
    }

    #[test]
    fn user_head_plus_payload_equals_encode_frame(
        header in user_header(),
        payload in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut split = BytesMut::new();
        partisan_core::wire::encode_user_head(&mut split, &header, payload.len(), DEFAULT_MAX_FRAME_LEN)
            .unwrap();
        split.extend_from_slice(&payload);
        let mut whole = BytesMut::new();
        Message::User { header, payload: Bytes::from(payload) }
            .encode_frame(&mut whole, DEFAULT_MAX_FRAME_LEN)
            .unwrap();
        prop_assert_eq!(split, whole);
    }

    #[test]
    fn user_messages_over_the_limit_are_refused_without_writing(
        header in user_header(),
        payload_len in 0usize..2048,
        max in 1usize..1024,
    ) {
        let mut buf = BytesMut::new();
        let r = partisan_core::wire::encode_user_head(&mut buf, &header, payload_len, max);
        match r {
            Ok(()) => {
                // The announced body is within the limit, and the head is a prefix of it.
                let announced = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
                prop_assert!(announced <= max);
                prop_assert_eq!(announced, buf.len() - LEN_PREFIX + payload_len);
            }
            Err(_) => prop_assert!(buf.is_empty()),
        }
    }

    #[test]
    fn handshake_msg_round_trips_through_a_frame(m in handshake_msg()) {
        let frame = handshake::encode(&m);
        let mut buf = BytesMut::from(&frame[..]);
        let body = decode_one_frame(&mut buf);
        prop_assert!(buf.is_empty());
        let decoded = handshake::decode(&body);
        match m {
            // A refusal is reported as an error, by design, with its code and detail intact.
            HandshakeMsg::Refused { code, detail } => {
                prop_assert_eq!(decoded, Err(HandshakeError::Refused { code, detail }));
            }
            m => prop_assert_eq!(decoded, Ok(m)),
        }
    }

    #[test]
    fn refusals_decode_whatever_version_the_peer_speaks(
        code in refuse_code(),
        detail in any::<String>(),
        version in any::<u16>(),
    ) {
        let mut frame = handshake::encode_refusal(code, detail.clone()).to_vec();
        frame[LEN_PREFIX + 4..LEN_PREFIX + 6].copy_from_slice(&version.to_be_bytes());
        let expected = if code == RefuseCode::Version && version != PROTOCOL_VERSION {
            // A version refusal from a node of another version says which version it speaks.
            HandshakeError::Version { ours: PROTOCOL_VERSION, theirs: version }
        } else {
            HandshakeError::Refused { code, detail }
        };
        prop_assert_eq!(handshake::decode(&frame[LEN_PREFIX..]), Err(expected));
    }

    #[test]
    fn other_versions_are_reported_as_such(m in handshake_msg(), version in any::<u16>()) {
        prop_assume!(version != PROTOCOL_VERSION);
        prop_assume!(!matches!(m, HandshakeMsg::Refused { .. }));
        let mut frame = handshake::encode(&m).to_vec();
        frame[LEN_PREFIX + 4..LEN_PREFIX + 6].copy_from_slice(&version.to_be_bytes());
        prop_assert_eq!(
            handshake::decode(&frame[LEN_PREFIX..]),
            Err(HandshakeError::Version { ours: PROTOCOL_VERSION, theirs: version })
        );
    }

    #[test]
    fn remote_ref_prints_then_parses_back(r in remote_ref()) {
        let printed = r.to_string();
        let parsed: RemoteRef = printed.parse().unwrap();
        prop_assert_eq!(&parsed, &r);
        // The per-kind types print the same URI as the enum.
        match &r {
            RemoteRef::Pid(p) => {
                prop_assert_eq!(p.to_string(), printed.clone());
                prop_assert_eq!(&printed.parse::<Pid>().unwrap(), p);
                prop_assert!(printed.parse::<Ref>().is_err());
            }
            RemoteRef::Ref(x) => {
                prop_assert_eq!(x.to_string(), printed.clone());
                prop_assert_eq!(&printed.parse::<Ref>().unwrap(), x);
                prop_assert!(printed.parse::<Pid>().is_err());
            }
            RemoteRef::Name(n) => prop_assert_eq!(n.to_string(), printed.clone()),
        }
        prop_assert_eq!(parsed.node(), r.node());
    }

    #[test]
    fn remote_ref_round_trips_through_postcard(r in remote_ref()) {
        let bytes = postcard::to_allocvec(&r).unwrap();
        prop_assert_eq!(postcard::from_bytes::<RemoteRef>(&bytes).unwrap(), r);
    }

    #[test]
    fn node_spec_round_trips_through_postcard(spec in node_spec()) {
        let bytes = postcard::to_allocvec(&spec).unwrap();
        let back: NodeSpec = postcard::from_bytes(&bytes).unwrap();
        prop_assert_eq!(&back, &spec);
        // The invariants hold on what was built and hence on what was decoded.
        prop_assert!(back.listen_addrs().windows(2).all(|w| w[0] < w[1]));
        prop_assert!(back.channel(&ChannelName::default_channel()).is_some());
        let membership = back.channel(&ChannelName::membership()).unwrap();
        prop_assert!(!membership.monotonic);
        prop_assert_eq!(back.lanes().count(), back.total_lanes());
    }

    #[test]
    fn node_spec_construction_is_idempotent(spec in node_spec()) {
        let again = NodeSpec::new(
            spec.name().clone(),
            spec.listen_addrs().to_vec(),
            spec.channels().clone(),
        )
        .unwrap();
        prop_assert_eq!(again, spec);
    }
}

// ---------------------------------------------------------------------------------------------
// Arbitrary input never panics
// ---------------------------------------------------------------------------------------------

proptest! {
    #[test]
    fn message_decode_never_panics(
        bytes in noise_with_prefix(vec![vec![1], vec![1, 2], vec![2], vec![3], vec![4]])
    ) {
        let _ = Message::decode(Bytes::from(bytes));
    }

    #[test]
    fn process_signal_decode_never_panics(bytes in noise_with_prefix(process_prefixes())) {
        let _ = Message::decode(Bytes::from(bytes));
    }

    #[test]
    fn truncated_or_corrupted_process_signals_never_panic(
        p in process_frame(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        xor in 1u8..,
    ) {
        let mut buf = BytesMut::new();
        Message::Control(Control::Process(p)).encode_frame(&mut buf, DEFAULT_MAX_FRAME_LEN).unwrap();
        let body = decode_one_frame(&mut buf).to_vec();
        let truncated = body[..cut.index(body.len() + 1)].to_vec();
        let _ = Message::decode(Bytes::from(truncated));
        let mut corrupted = body;
        let i = flip.index(corrupted.len());
        corrupted[i] ^= xor;
        let _ = Message::decode(Bytes::from(corrupted));
    }

    #[test]
    fn truncated_or_corrupted_messages_never_panic(
        m in message(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        xor in 1u8..,
    ) {
        let mut buf = BytesMut::new();
        m.encode_frame(&mut buf, DEFAULT_MAX_FRAME_LEN).unwrap();
        let body = decode_one_frame(&mut buf).to_vec();
        let truncated = body[..cut.index(body.len() + 1)].to_vec();
        let _ = Message::decode(Bytes::from(truncated));
        let mut corrupted = body;
        let i = flip.index(corrupted.len());
        corrupted[i] ^= xor;
        let _ = Message::decode(Bytes::from(corrupted));
    }

    #[test]
    fn handshake_decode_never_panics(bytes in noise_with_prefix(vec![handshake_prefix()])) {
        let _ = handshake::decode(&bytes);
        let _ = Acceptor::on_hello(
            &local_identity(),
            Cookie::new("cookie").unwrap(),
            [9; NONCE_LEN],
            &bytes,
        );
    }

    #[test]
    fn truncated_or_corrupted_handshakes_never_panic(
        m in handshake_msg(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        xor in 1u8..,
    ) {
        let frame = handshake::encode(&m);
        let body = &frame[LEN_PREFIX..];
        let _ = handshake::decode(&body[..cut.index(body.len() + 1)]);
        let mut corrupted = body.to_vec();
        let i = flip.index(corrupted.len());
        corrupted[i] ^= xor;
        let _ = handshake::decode(&corrupted);
        let _ = Acceptor::on_hello(
            &local_identity(),
            Cookie::new("cookie").unwrap(),
            [9; NONCE_LEN],
            &corrupted,
        );
    }

    #[test]
    fn node_spec_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(spec) = postcard::from_bytes::<NodeSpec>(&bytes) {
            // Whatever decodes satisfies the spec invariants.
            prop_assert!(spec.listen_addrs().windows(2).all(|w| w[0] < w[1]));
            prop_assert!(spec.channel(&ChannelName::membership()).is_some_and(|o| !o.monotonic));
            prop_assert!(spec.channels().values().all(|o| (1..=MAX_PARALLELISM).contains(&o.parallelism)));
        }
    }

    #[test]
    fn remote_ref_parse_never_panics(s in any::<String>(), kind in 0usize..4) {
        let prefixed = match kind {
            0 => s,
            1 => format!("partisan:pid:a@b:{s}"),
            2 => format!("partisan:name:a@b:{s}"),
            _ => format!("partisan:{s}"),
        };
        let _ = prefixed.parse::<RemoteRef>();
    }

    #[test]
    fn frame_decoder_on_noise_never_panics_nor_exceeds_its_max(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        max in 0usize..64,
    ) {
        let d = FrameDecoder::new(max);
        let mut buf = BytesMut::from(&bytes[..]);
        loop {
            let before = buf.len();
            match d.decode(&mut buf) {
                Ok(Some(frame)) => {
                    prop_assert!(frame.len() <= max);
                    prop_assert_eq!(buf.len(), before - LEN_PREFIX - frame.len());
                }
                Ok(None) => {
                    let wanted = d.wanted(&buf);
                    prop_assert!(wanted > buf.len(), "needs more bytes but wants {} of {}", wanted, buf.len());
                    prop_assert!(wanted <= LEN_PREFIX + max);
                    break;
                }
                Err(_) => break,
            }
        }
    }

    #[test]
    fn frame_decoder_recovers_frames_from_any_split(
        bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..=64), 0..12),
        cuts in proptest::collection::vec(any::<usize>(), 0..24),
    ) {
        let d = FrameDecoder::new(64);
        let wire = frame_stream(&bodies);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in split_at_points(&wire, cuts) {
            buf.extend_from_slice(chunk);
            while let Some(frame) = d.decode(&mut buf).unwrap() {
                out.push(frame.to_vec());
            }
            // Between frames the decoder asks for no more than the next frame needs.
            prop_assert!(d.wanted(&buf) > buf.len());
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(out, bodies);
    }

    #[test]
    fn an_oversized_frame_is_reported_before_its_body_arrives(
        good in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..=32), 0..4),
        excess in 1usize..1_000_000,
        max in 0usize..64,
    ) {
        let good: Vec<Vec<u8>> = good.into_iter().map(|mut b| { b.truncate(max); b }).collect();
        let mut wire = frame_stream(&good);
        wire.extend_from_slice(&len_prefix(max + excess));
        let d = FrameDecoder::new(max);
        let mut buf = BytesMut::from(&wire[..]);
        for b in &good {
            prop_assert_eq!(&d.decode(&mut buf).unwrap().unwrap()[..], &b[..]);
        }
        prop_assert!(d.decode(&mut buf).is_err());
    }
}
