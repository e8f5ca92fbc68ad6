//! Why a dial failed, typed, and whether retrying can help. One classification for every
//! driver: the runtime maps its i/o and handshake errors here, the simulator builds these
//! directly, and the connection planner decides from [`DialFailure::is_permanent`] whether the
//! target is redialed.

use std::io;

use crate::id::NodeName;
use crate::overlay::OverlayKind;
use crate::wire::handshake::{HandshakeError, RefuseCode};

/// How a dial failed, as the dialing node learned it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DialFailure {
    /// The two nodes hold different cookies: one side's proof of the cookie did not verify.
    #[error("the peer holds another cookie (the cookie challenge failed)")]
    BadCookie,
    /// Another node already runs under this node's name: names must be unique in a cluster.
    #[error("another node is already running as {0}: node names must be unique in a cluster")]
    NameInUse(NodeName),
    /// The peer runs another overlay: the two cannot be in one cluster.
    #[error("this node runs the {ours} overlay and the peer runs {theirs}: they cannot form one cluster")]
    OverlayMismatch {
        /// This node's overlay.
        ours: OverlayKind,
        /// The peer's overlay.
        theirs: OverlayKind,
    },
    /// The peer speaks another version of the wire protocol.
    #[error("this node speaks protocol version {ours} and the peer speaks {theirs}")]
    VersionMismatch {
        /// This node's version.
        ours: u16,
        /// The peer's version.
        theirs: u16,
    },
    /// The address reached this very node.
    #[error("the address reaches this node itself")]
    SelfConnect,
    /// Another node than the one expected answered at the address.
    #[error(
        "another node than {expected} answered at its address{}",
        answered(got)
    )]
    WrongNode {
        /// The node dialed for.
        expected: NodeName,
        /// The node that answered, when it said (it may refuse before naming itself).
        got: Option<NodeName>,
    },
    /// No connection could be made (refused, reset, no route) or it broke during the
    /// handshake.
    #[error("{detail}")]
    Unreachable {
        /// The operating system's classification.
        kind: io::ErrorKind,
        /// What happened.
        detail: String,
    },
    /// Nothing answered within the connect or handshake timeout.
    #[error("no answer within the timeout")]
    TimedOut,
    /// The peer refused the connection for a reason not listed above (a simultaneous dial it
    /// won, it is shutting down, a lane it does not have, ...).
    #[error("the peer refused the connection: {detail}")]
    Refused {
        /// The peer's reason.
        code: RefuseCode,
        /// The peer's text (cut and made printable).
        detail: String,
    },
    /// The peer broke the handshake protocol (not a partisan node, a malformed frame).
    #[error("handshake failed: {0}")]
    Protocol(String),
}

impl DialFailure {
    /// Whether retrying the same target cannot help: wrong cookie, overlay or version, a name
    /// in use, the node itself, another node at the address. The planner stops dialing a target
    /// that failed so before it was ever reached.
    pub fn is_permanent(&self) -> bool {
        match self {
            DialFailure::BadCookie
            | DialFailure::NameInUse(_)
            | DialFailure::OverlayMismatch { .. }
            | DialFailure::VersionMismatch { .. }
            | DialFailure::SelfConnect
            | DialFailure::WrongNode { .. } => true,
            DialFailure::Refused { code, .. } => matches!(
                code,
                RefuseCode::WrongName
                    | RefuseCode::Version
                    | RefuseCode::NameInUse
                    | RefuseCode::OverlayMismatch
            ),
            DialFailure::Unreachable { .. } | DialFailure::TimedOut | DialFailure::Protocol(_) => {
                false
            }
        }
    }

    /// Whether this is a refusal that is part of normal operation: the losing side of a
    /// simultaneous dial, or a peer that is shutting down.
    pub fn is_race(&self) -> bool {
        matches!(
            self,
            DialFailure::Refused {
                code: RefuseCode::Simultaneous | RefuseCode::ShuttingDown,
                ..
            }
        )
    }

    /// An i/o error of the dial or the handshake.
    pub fn io(e: &io::Error) -> DialFailure {
        DialFailure::Unreachable {
            kind: e.kind(),
            detail: e.to_string(),
        }
    }

    /// The failure a handshake error means to the dialer, which expected the node
    /// `expected` (when it dialed a known node). A peer's refusal is typed by its code;
    /// [`crate::wire::handshake::Dialer::typed`] first gives it the details the dialer knows
    /// (its own name, the overlay the peer announced).
    pub fn from_handshake(e: &HandshakeError, expected: Option<&NodeName>) -> DialFailure {
        match e {
            HandshakeError::BadCookie => DialFailure::BadCookie,
            HandshakeError::NameInUse(n) => DialFailure::NameInUse(n.clone()),
            HandshakeError::OverlayMismatch { ours, theirs } => DialFailure::OverlayMismatch {
                ours: *ours,
                theirs: *theirs,
            },
            HandshakeError::Version { ours, theirs } => DialFailure::VersionMismatch {
                ours: *ours,
                theirs: *theirs,
            },
            HandshakeError::SelfConnect => DialFailure::SelfConnect,
            HandshakeError::WrongName { expected, got } => DialFailure::WrongNode {
                expected: expected.clone(),
                got: Some(got.clone()),
            },
            HandshakeError::NotPartisan
            | HandshakeError::Malformed(_)
            | HandshakeError::Unexpected(_)
            | HandshakeError::UnknownLane { .. } => DialFailure::Protocol(e.to_string()),
            HandshakeError::Refused {
                code: RefuseCode::BadCookie,
                ..
            } => DialFailure::BadCookie,
            HandshakeError::Refused {
                code: RefuseCode::SelfConnect,
                ..
            } => DialFailure::SelfConnect,
            HandshakeError::Refused {
                code: RefuseCode::WrongName,
                ..
            } if expected.is_some() => DialFailure::WrongNode {
                expected: expected.cloned().expect("checked"),
                got: None,
            },
            HandshakeError::Refused { code, detail } => DialFailure::Refused {
                code: *code,
                detail: detail.clone(),
            },
        }
    }
}

/// ", but N answered", when the node that answered is known.
fn answered(got: &Option<NodeName>) -> String {
    got.as_ref()
        .map(|n| format!(" ({n} answered)"))
        .unwrap_or_default()
}
