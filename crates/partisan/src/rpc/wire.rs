//! What RPC requests and replies look like on the wire: ordinary user messages (postcard),
//! a small header followed by the postcard encoding of the arguments or the result.
//!
//! The body is appended after the header rather than nested in it, so the server reads the
//! header without knowing the argument type, and the arguments are encoded once, straight
//! into the message.

use serde::{Deserialize, Serialize};

/// Longest handler name, in bytes (names are checked at registration; a longer one in a
/// request simply matches nothing).
pub(crate) const MAX_NAME_LEN: usize = 255;

/// Longest panic message or error text carried in a reply, in bytes.
pub(super) const MAX_REASON_LEN: usize = 4096;

/// Header of a message to a node's RPC server; the arguments follow.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(super) enum Request<'a> {
    /// Run `name` and answer the sender (the caller node's RPC client) with `id`.
    Call {
        /// The caller's request id, echoed in the reply.
        id: u64,
        /// Handler name.
        name: &'a str,
    },
    /// Run `name`; no answer.
    Cast {
        /// Handler name.
        name: &'a str,
    },
}

/// Header of a reply to a call; with [`Status::Ok`] the encoded result follows.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct ReplyHeader<'a> {
    /// The request id the reply answers.
    pub(super) id: u64,
    /// How the call went.
    #[serde(borrow)]
    pub(super) status: Status<'a>,
}

/// How a call went at the server.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(super) enum Status<'a> {
    /// The handler returned; its encoded result follows the header.
    Ok,
    /// No handler of that name is registered.
    UnknownName,
    /// The handler panicked, with this message.
    Panicked(&'a str),
    /// The arguments did not decode into the handler's argument type.
    BadArgs(&'a str),
    /// The handler's result could not be encoded.
    BadResult(&'a str),
}

/// Header `h` followed by `body`, both postcard, in a buffer of exactly their size (so it
/// becomes a `Bytes` without another allocation).
pub(super) fn encode<H: Serialize, B: Serialize + ?Sized>(
    h: &H,
    body: &B,
) -> Result<Vec<u8>, postcard::Error> {
    let len = size(h)? + size(body)?;
    let buf = postcard::to_extend(h, Vec::with_capacity(len))?;
    postcard::to_extend(body, buf)
}

/// Bytes of the postcard encoding of `v`.
fn size<T: Serialize + ?Sized>(v: &T) -> Result<usize, postcard::Error> {
    postcard::serialize_with_flavor(v, postcard::ser_flavors::Size::default())
}

/// A reply carrying no result.
pub(super) fn reply(id: u64, status: Status<'_>) -> Vec<u8> {
    // Encoding a header of integers and strings into a Vec cannot fail; stay total anyway.
    encode(&ReplyHeader { id, status }, &()).unwrap_or_default()
}

/// `s` cut to at most [`MAX_REASON_LEN`] bytes, on a character boundary.
pub(super) fn clip(s: &str) -> &str {
    if s.len() <= MAX_REASON_LEN {
        return s;
    }
    let mut end = MAX_REASON_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_header_is_followed_by_the_arguments_and_both_read_back() {
        let buf = encode(&Request::Call { id: 7, name: "add" }, &(1i64, 2i64)).unwrap();
        assert_eq!(buf.len(), buf.capacity(), "exactly sized");
        let (h, rest) = postcard::take_from_bytes::<Request>(&buf).unwrap();
        assert_eq!(h, Request::Call { id: 7, name: "add" });
        assert_eq!(postcard::from_bytes::<(i64, i64)>(rest).unwrap(), (1, 2));
    }

    #[test]
    fn replies_round_trip_and_garbage_is_an_error_not_a_panic() {
        let buf = reply(u64::MAX, Status::Panicked("boom"));
        let (h, rest) = postcard::take_from_bytes::<ReplyHeader>(&buf).unwrap();
        assert_eq!(h.id, u64::MAX);
        assert_eq!(h.status, Status::Panicked("boom"));
        assert!(rest.is_empty());
        for junk in [&[][..], &[0xff; 3][..], &[0, 9][..], &[1, 200, 1][..]] {
            assert!(postcard::take_from_bytes::<Request>(junk).is_err());
        }
    }

    #[test]
    fn clipping_keeps_utf8_whole() {
        let long = "é".repeat(MAX_REASON_LEN);
        let c = clip(&long);
        assert!(c.len() <= MAX_REASON_LEN && c.len() >= MAX_REASON_LEN - 1);
        assert_eq!(clip("short"), "short");
    }
}
