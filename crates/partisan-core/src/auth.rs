//! The shared cookie and the challenge-response proofs built from it.
//!
//! Each side proves it holds the cookie by sending `HMAC-SHA256(cookie, transcript)` where the
//! transcript binds a role label, both fresh nonces, both identities exactly as each side
//! presented itself (name, creation, addresses, channels, overlay, tag, frame limit), and the
//! channel and lane of the connection. The cookie itself never crosses the wire, a proof cannot
//! be replayed on another connection (the peer's nonce is fresh), and a proof for one role can
//! not be reflected back as the other role's.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::id::ChannelName;

/// Bytes in a handshake nonce.
pub const NONCE_LEN: usize = 32;
/// Bytes in a handshake proof.
pub const PROOF_LEN: usize = 32;
/// Longest accepted cookie, in bytes.
pub const MAX_COOKIE_LEN: usize = 1024;

/// A fresh random value chosen by one side of a handshake.
pub type Nonce = [u8; NONCE_LEN];
/// An HMAC proof of cookie possession.
pub type Proof = [u8; PROOF_LEN];

/// The shared secret of a cluster. Its `Debug` output never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Cookie(Vec<u8>);

/// Why a cookie was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CookieError {
    /// Empty cookie.
    #[error("cookie is empty")]
    Empty,
    /// Longer than [`MAX_COOKIE_LEN`].
    #[error("cookie is longer than 1024 bytes")]
    TooLong,
}

impl Cookie {
    /// A cookie from raw bytes (1 to 1024 bytes). Surrounding whitespace is not trimmed here;
    /// callers reading a cookie file trim it first.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, CookieError> {
        let bytes = bytes.into();
        if bytes.is_empty() {
            return Err(CookieError::Empty);
        }
        if bytes.len() > MAX_COOKIE_LEN {
            return Err(CookieError::TooLong);
        }
        Ok(Cookie(bytes))
    }
}

impl fmt::Debug for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cookie(<redacted>)")
    }
}

/// Which side of the handshake a proof is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The side that opened the connection.
    Dialer,
    /// The side that accepted it.
    Acceptor,
}

/// Everything a proof is bound to.
#[derive(Debug, Clone)]
pub struct Transcript<'a> {
    /// The dialer's identity as it presented it (canonical bytes).
    pub dialer: &'a [u8],
    /// The acceptor's identity as it presented it (canonical bytes).
    pub acceptor: &'a [u8],
    /// Channel of the connection.
    pub channel: &'a ChannelName,
    /// Lane of the connection.
    pub lane: u16,
    /// Dialer's nonce.
    pub dialer_nonce: &'a Nonce,
    /// Acceptor's nonce.
    pub acceptor_nonce: &'a Nonce,
}

impl Transcript<'_> {
    fn mac(&self, cookie: &Cookie, role: Role) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&cookie.0)
            .expect("HMAC accepts keys of any length");
        mac.update(match role {
            Role::Dialer => b"partisan/v1/dialer\0",
            Role::Acceptor => b"partisan/v1/acceptor",
        });
        for part in [self.dialer, self.acceptor, self.channel.as_str().as_bytes()] {
            mac.update(&(part.len() as u32).to_be_bytes());
            mac.update(part);
        }
        mac.update(&self.lane.to_be_bytes());
        mac.update(self.dialer_nonce);
        mac.update(self.acceptor_nonce);
        mac
    }

    /// The proof `role` sends.
    pub fn prove(&self, cookie: &Cookie, role: Role) -> Proof {
        self.mac(cookie, role).finalize().into_bytes().into()
    }

    /// Checks, in constant time, a proof received from `role`.
    pub fn verify(&self, cookie: &Cookie, role: Role, proof: &Proof) -> bool {
        self.mac(cookie, role).verify_slice(proof).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_depend_on_cookie_role_and_nonces() {
        let (a, b) = (b"dialer identity", b"acceptor identity");
        let ch = ChannelName::default_channel();
        let (n1, n2) = ([1u8; 32], [2u8; 32]);
        let t = Transcript {
            dialer: a,
            acceptor: b,
            channel: &ch,
            lane: 0,
            dialer_nonce: &n1,
            acceptor_nonce: &n2,
        };
        let c = Cookie::new("secret").unwrap();
        let p = t.prove(&c, Role::Dialer);
        assert!(t.verify(&c, Role::Dialer, &p));
        assert!(!t.verify(&c, Role::Acceptor, &p), "reflection must fail");
        assert!(!t.verify(&Cookie::new("other").unwrap(), Role::Dialer, &p));
        let t2 = Transcript {
            acceptor_nonce: &n1,
            ..t.clone()
        };
        assert!(
            !t2.verify(&c, Role::Dialer, &p),
            "replay under a new nonce must fail"
        );
        let t3 = Transcript {
            acceptor: b"acceptor identiTy",
            ..t.clone()
        };
        assert!(
            !t3.verify(&c, Role::Dialer, &p),
            "an altered identity must fail"
        );
        assert_eq!(format!("{c:?}"), "Cookie(<redacted>)");
        assert!(Cookie::new("").is_err());
    }
}
