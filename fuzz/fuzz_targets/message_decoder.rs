//! Decodes the input as a connection-message frame body; whatever decodes must re-encode,
//! decode to the same message, and be a fixed point of encoding from then on.

#![no_main]

use libfuzzer_sys::fuzz_target;
use partisan_core::bytes::{Bytes, BytesMut};
use partisan_core::wire::{FrameDecoder, Message, DEFAULT_MAX_FRAME_LEN, LEN_PREFIX};

fn encode(m: &Message) -> BytesMut {
    let mut buf = BytesMut::new();
    m.encode_frame(&mut buf, DEFAULT_MAX_FRAME_LEN)
        .expect("a decoded message re-encodes");
    buf
}

fuzz_target!(|data: &[u8]| {
    if data.len() > DEFAULT_MAX_FRAME_LEN {
        return;
    }
    let Ok(msg) = Message::decode(Bytes::copy_from_slice(data)) else {
        return;
    };
    let mut frame = encode(&msg);
    // Encoding is canonical: never longer than any body that decodes to the same message.
    assert!(frame.len() - LEN_PREFIX <= data.len());
    let canonical = frame.clone();
    let body = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN)
        .decode(&mut frame)
        .expect("within the limit")
        .expect("one complete frame");
    assert!(frame.is_empty());
    let again = Message::decode(body).expect("a re-encoded message decodes");
    assert_eq!(again, msg);
    assert_eq!(encode(&again), canonical);
});
