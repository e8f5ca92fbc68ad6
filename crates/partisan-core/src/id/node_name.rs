//! Node names: `name@host`.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::IdError;

/// Longest accepted node name, in bytes.
pub const MAX_NODE_NAME_LEN: usize = 255;

/// The name of a node, `name@host`.
///
/// Both parts are non-empty and made of ASCII letters, digits, `_`, `-` and `.`; the whole name
/// is at most [`MAX_NODE_NAME_LEN`] bytes. A `NodeName` is therefore always safe to embed in a
/// remote-reference URI (it never contains `:`), and cloning it is a reference-count increment.
/// Names compare and order byte-wise; that order is the tie-break order of the transport.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeName(Arc<str>);

impl NodeName {
    /// Parses and validates a node name.
    pub fn new(s: &str) -> Result<Self, IdError> {
        validate(s)?;
        Ok(NodeName(Arc::from(s)))
    }

    /// The whole name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before `@`.
    pub fn short_name(&self) -> &str {
        self.0.split_once('@').map(|(n, _)| n).unwrap_or(&self.0)
    }

    /// The part after `@`.
    pub fn host(&self) -> &str {
        self.0.split_once('@').map(|(_, h)| h).unwrap_or("")
    }
}

fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-' || c == b'.'
}

fn validate(s: &str) -> Result<(), IdError> {
    if s.len() > MAX_NODE_NAME_LEN {
        return Err(IdError::NodeName {
            name: s.chars().take(40).collect(),
            reason: "longer than 255 bytes",
        });
    }
    let Some((name, host)) = s.split_once('@') else {
        return Err(IdError::NodeName {
            name: s.to_string(),
            reason: "expected name@host",
        });
    };
    if name.is_empty() || host.is_empty() {
        return Err(IdError::NodeName {
            name: s.to_string(),
            reason: "name and host must both be non-empty",
        });
    }
    if !name.bytes().all(is_name_char) || !host.bytes().all(is_name_char) {
        return Err(IdError::NodeName {
            name: s.to_string(),
            reason: "only ASCII letters, digits, '_', '-' and '.' are allowed around the '@'",
        });
    }
    Ok(())
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl FromStr for NodeName {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NodeName::new(s)
    }
}

impl AsRef<str> for NodeName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for NodeName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for NodeName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Borrowing when the format allows keeps decoding allocation to the one Arc.
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = NodeName;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a node name name@host")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<NodeName, E> {
                NodeName::new(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_usual_names() {
        for n in ["a@b", "node1@127.0.0.1", "my_node-2@host.example.com"] {
            let name = NodeName::new(n).unwrap();
            assert_eq!(name.as_str(), n);
        }
        let n = NodeName::new("alpha@10.0.0.1").unwrap();
        assert_eq!(n.short_name(), "alpha");
        assert_eq!(n.host(), "10.0.0.1");
    }

    #[test]
    fn rejects_malformed_names() {
        for n in ["", "a", "@b", "a@", "a@b@c", "a b@c", "a@b:1", "ä@b"] {
            assert!(NodeName::new(n).is_err(), "{n:?} should be rejected");
        }
        assert!(NodeName::new(&format!("a@{}", "h".repeat(300))).is_err());
    }
}
