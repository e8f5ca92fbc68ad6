//! Everything that crosses the network: framing, connection messages, the handshake.

pub mod frame;
pub mod handshake;
pub mod message;

pub use frame::{FrameDecoder, FrameError, DEFAULT_MAX_FRAME_LEN, LEN_PREFIX, MIN_MAX_FRAME_LEN};
pub use message::{
    encode_relay_head, encode_user_head, Control, DecodeError, EncodeError, Message, RelayHeader,
    RelayTarget, Target, UserHeader, MAX_RELAY_HOPS,
};
