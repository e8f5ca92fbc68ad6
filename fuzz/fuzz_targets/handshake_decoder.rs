//! Decodes the input as a handshake frame body and drives both handshake state machines with
//! it: nothing may panic, and whatever decodes must round-trip.

#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use partisan_core::auth::Cookie;
use partisan_core::bytes::BytesMut;
use partisan_core::id::{ChannelName, ChannelOpts, NodeName, NodeSpec};
use partisan_core::overlay::OverlayKind;
use partisan_core::wire::handshake::{
    self, Acceptor, DialParams, Dialer, DialerStep, HandshakeError, HandshakeMsg, Identity,
};
use partisan_core::wire::{FrameDecoder, DEFAULT_MAX_FRAME_LEN};

fn spec(name: &str) -> NodeSpec {
    let mut ch = BTreeMap::new();
    ch.insert(
        ChannelName::new("data").unwrap(),
        ChannelOpts::with_parallelism(4),
    );
    NodeSpec::new(
        NodeName::new(name).unwrap(),
        vec![
            "127.0.0.1:4370".parse().unwrap(),
            "[::1]:4370".parse().unwrap(),
        ],
        ch,
    )
    .unwrap()
}

fn local() -> &'static Identity {
    static LOCAL: OnceLock<Identity> = OnceLock::new();
    LOCAL.get_or_init(|| Identity {
        spec: spec("local@host"),
        creation: 7,
        overlay: OverlayKind::HyParView,
        tag: None,
        max_frame: 1 << 20,
    })
}

fn cookie() -> Cookie {
    Cookie::new("fuzz-cookie").unwrap()
}

fn body(frame: &[u8]) -> Vec<u8> {
    let mut buf = BytesMut::from(frame);
    let body = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN)
        .decode(&mut buf)
        .expect("within the limit")
        .expect("one complete frame");
    assert!(buf.is_empty());
    body.to_vec()
}

fuzz_target!(|data: &[u8]| {
    // Plain decoding: whatever decodes re-encodes to something that decodes the same.
    match handshake::decode(data) {
        Ok(msg) => {
            let again = handshake::decode(&body(&handshake::encode(&msg)));
            assert_eq!(again, Ok(msg));
        }
        Err(HandshakeError::Refused { code, detail }) => {
            let again = handshake::decode(&body(&handshake::encode_refusal(code, detail.clone())));
            assert_eq!(again, Err(HandshakeError::Refused { code, detail }));
        }
        Err(e) => {
            let _ = e.refusal();
        }
    }

    // The acceptor, as if the input were the dialer's Hello.
    if let Ok((acceptor, challenge)) = Acceptor::on_hello(local(), cookie(), [3; 32], data) {
        assert!(matches!(
            handshake::decode(&body(&challenge)),
            Ok(HandshakeMsg::Challenge { .. })
        ));
        let peer = acceptor.peer().clone();
        assert!(local().spec.has_lane(&peer.channel, peer.lane));
        assert_ne!(peer.spec().name(), local().spec.name());
        // The same bytes again are not a valid Response.
        assert!(acceptor.on_response(local().overlay, data).is_err());
    }

    // The dialer, as if the input were the acceptor's answer to its Hello.
    let (mut dialer, _hello) = Dialer::start(
        DialParams {
            local: local().clone(),
            expect: None,
            channel: ChannelName::new("data").unwrap(),
            lane: 1,
        },
        cookie(),
        [4; 32],
    );
    let _ = dialer.on_frame(data);
    // Nothing but a Welcome proving the cookie establishes a connection, and no input can
    // carry that proof.
    assert!(!matches!(
        dialer.on_frame(data),
        Ok(DialerStep::Established(_))
    ));
});
