//! Feeds a byte stream to `FrameDecoder` in reads whose sizes come from the input itself and
//! checks the result against decoding the whole stream at once.
//!
//! Input layout: `[max, n, size_1 .. size_n, stream ..]` where `max` is the decoder's frame
//! limit (so at most 255 bytes) and the `n % 16` read sizes are used in turn.

#![no_main]

use libfuzzer_sys::fuzz_target;
use partisan_core::bytes::{Bytes, BytesMut};
use partisan_core::wire::{FrameDecoder, LEN_PREFIX};

/// Frames decoded, whether decoding stopped on an error, and the bytes left over.
struct Outcome {
    frames: Vec<Bytes>,
    failed: bool,
    leftover: usize,
}

fn drain(d: &FrameDecoder, buf: &mut BytesMut, frames: &mut Vec<Bytes>) -> bool {
    loop {
        let before = buf.len();
        match d.decode(buf) {
            Ok(Some(frame)) => {
                assert!(
                    frame.len() <= d.max_frame_len(),
                    "frame of {} bytes over the {}-byte limit",
                    frame.len(),
                    d.max_frame_len()
                );
                assert_eq!(buf.len(), before - LEN_PREFIX - frame.len());
                frames.push(frame);
            }
            Ok(None) => {
                let wanted = d.wanted(buf);
                assert!(
                    wanted > buf.len(),
                    "no progress possible yet wants {wanted}"
                );
                assert!(wanted <= LEN_PREFIX + d.max_frame_len());
                return false;
            }
            Err(_) => return true,
        }
    }
}

fn one_shot(d: &FrameDecoder, stream: &[u8]) -> Outcome {
    let mut buf = BytesMut::from(stream);
    let mut frames = Vec::new();
    let failed = drain(d, &mut buf, &mut frames);
    Outcome {
        frames,
        failed,
        leftover: buf.len(),
    }
}

fn chunked(d: &FrameDecoder, stream: &[u8], sizes: &[u8]) -> Outcome {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut rest = stream;
    let mut i = 0;
    let any_progress = sizes.iter().any(|&s| s > 0);
    while !rest.is_empty() {
        let n = if any_progress {
            let s = sizes[i % sizes.len()] as usize;
            i += 1;
            s.min(rest.len())
        } else {
            rest.len()
        };
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        buf.extend_from_slice(chunk);
        if drain(d, &mut buf, &mut frames) {
            return Outcome {
                frames,
                failed: true,
                leftover: buf.len() + rest.len(),
            };
        }
    }
    Outcome {
        frames,
        failed: false,
        leftover: buf.len(),
    }
}

fuzz_target!(|data: &[u8]| {
    let [max, n, rest @ ..] = data else {
        return;
    };
    let n = (*n as usize % 16).min(rest.len());
    let (sizes, stream) = rest.split_at(n);
    let d = FrameDecoder::new(*max as usize);

    let whole = one_shot(&d, stream);
    let split = chunked(&d, stream, sizes);
    assert_eq!(
        split.frames, whole.frames,
        "frames depend on how reads were split"
    );
    assert_eq!(
        split.failed, whole.failed,
        "error depends on how reads were split"
    );
    if !whole.failed {
        assert_eq!(split.leftover, whole.leftover);
    }
});
