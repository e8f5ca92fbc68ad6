//! Length-prefixed framing: a 4-byte big-endian body length, then the body.

use bytes::{Buf, Bytes, BytesMut};

/// Bytes of the length prefix in front of every frame body.
pub const LEN_PREFIX: usize = 4;

/// Default largest frame body accepted (8 MiB); configurable per node.
pub const DEFAULT_MAX_FRAME_LEN: usize = 8 * 1024 * 1024;

/// Smallest maximum frame length a node may be configured with: room for a handshake.
pub const MIN_MAX_FRAME_LEN: usize = 4 * 1024;

/// A framing violation: the connection it happened on cannot be trusted any further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces a body larger than the configured maximum.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    Oversized {
        /// Announced body length.
        len: usize,
        /// Configured maximum.
        max: usize,
    },
}

/// Splits a byte stream into frame bodies without copying them.
///
/// It never allocates on behalf of the peer: an announced length above the maximum is an error
/// before any buffer is reserved for it.
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    max_frame_len: usize,
}

impl FrameDecoder {
    /// A decoder that refuses bodies longer than `max_frame_len` bytes.
    pub fn new(max_frame_len: usize) -> Self {
        FrameDecoder { max_frame_len }
    }

    /// The configured maximum body length.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// Takes one complete frame body off the front of `buf`, if `buf` holds one.
    ///
    /// Returns `Ok(None)` when more bytes are needed; then [`FrameDecoder::wanted`] tells how
    /// many bytes the buffer should hold for the next call to make progress.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        if buf.len() < LEN_PREFIX {
            return Ok(None);
        }
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len > self.max_frame_len {
            return Err(FrameError::Oversized {
                len,
                max: self.max_frame_len,
            });
        }
        if buf.len() < LEN_PREFIX + len {
            return Ok(None);
        }
        buf.advance(LEN_PREFIX);
        Ok(Some(buf.split_to(len).freeze()))
    }

    /// The body of the complete frame at the front of `buf`, if `buf` holds one, without taking
    /// it off: the caller then drops [`LEN_PREFIX`] + the body's length from the front. For
    /// bodies read in place (no reference to the buffer taken).
    pub fn peek<'b>(&self, buf: &'b [u8]) -> Result<Option<&'b [u8]>, FrameError> {
        let Some(prefix) = buf.get(..LEN_PREFIX) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        if len > self.max_frame_len {
            return Err(FrameError::Oversized {
                len,
                max: self.max_frame_len,
            });
        }
        Ok(buf.get(LEN_PREFIX..LEN_PREFIX + len))
    }

    /// Total bytes `buf` must hold before [`FrameDecoder::decode`] can return the next frame
    /// (never more than the prefix plus the maximum body length).
    pub fn wanted(&self, buf: &[u8]) -> usize {
        if buf.len() < LEN_PREFIX {
            return LEN_PREFIX;
        }
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        LEN_PREFIX + len.min(self.max_frame_len)
    }
}

/// The length prefix for a body of `len` bytes.
///
/// # Panics
/// Never for bodies up to `u32::MAX` bytes; callers bound bodies by the frame limit first.
pub fn len_prefix(len: usize) -> [u8; LEN_PREFIX] {
    u32::try_from(len)
        .expect("frame body bounded by the frame limit")
        .to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_frames_across_partial_reads() {
        let d = FrameDecoder::new(16);
        let mut wire = Vec::new();
        for body in [&b"abc"[..], b"", b"0123456789abcdef"] {
            wire.extend_from_slice(&len_prefix(body.len()));
            wire.extend_from_slice(body);
        }
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for b in wire {
            buf.extend_from_slice(&[b]);
            while let Some(f) = d.decode(&mut buf).unwrap() {
                out.push(f);
            }
        }
        assert_eq!(out, vec![&b"abc"[..], b"", b"0123456789abcdef"]);
        assert!(buf.is_empty());
    }

    #[test]
    fn peek_sees_the_frame_decode_takes() {
        let d = FrameDecoder::new(16);
        let mut wire = BytesMut::new();
        wire.extend_from_slice(&len_prefix(3));
        assert_eq!(d.peek(&wire), Ok(None));
        wire.extend_from_slice(b"abcde");
        assert_eq!(d.peek(&wire), Ok(Some(&b"abc"[..])));
        assert_eq!(d.decode(&mut wire), Ok(Some(Bytes::from_static(b"abc"))));
        assert_eq!(
            d.peek(&len_prefix(17)),
            Err(FrameError::Oversized { len: 17, max: 16 })
        );
    }

    #[test]
    fn oversized_prefix_is_an_error_before_buffering() {
        let d = FrameDecoder::new(16);
        let mut buf = BytesMut::from(&len_prefix(17)[..]);
        assert_eq!(
            d.decode(&mut buf),
            Err(FrameError::Oversized { len: 17, max: 16 })
        );
        let huge = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        assert_eq!(d.wanted(&huge), LEN_PREFIX + 16);
    }
}
