//! Process identifiers, references, registered names and their URI form.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{IdError, NodeName};

/// Longest accepted registered process name, in bytes.
pub const MAX_PROCESS_NAME_LEN: usize = 255;

/// The incarnation of a node: chosen anew each time a node starts (the runtime uses the start
/// time in microseconds), so identifiers minted by an earlier run of the same node name never
/// match the current run.
pub type Creation = u64;

/// A process identifier: the node it lives on, that node's creation, and a per-run id.
///
/// A `Pid` is only ever delivered to the run of the node it was minted by: a message addressed
/// to a pid whose creation differs from the destination node's current creation is rejected.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Pid {
    /// Node the process lives on.
    pub node: NodeName,
    /// Creation of that node when the pid was minted.
    pub creation: Creation,
    /// Id, unique within one creation of the node.
    pub id: u64,
}

/// A unique reference, minted by a node; a process may register one as an alias of itself so
/// that messages sent to the reference reach it (used as reply tags by calls).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ref {
    /// Node that minted the reference.
    pub node: NodeName,
    /// Creation of that node when the reference was minted.
    pub creation: Creation,
    /// Id, unique within one creation of the node.
    pub id: u64,
}

/// A registered process name: 1 to 255 bytes of printable UTF-8 without whitespace.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProcessName(Arc<str>);

impl ProcessName {
    /// Validates a registered name.
    pub fn new(s: &str) -> Result<Self, IdError> {
        if s.is_empty() || s.len() > MAX_PROCESS_NAME_LEN {
            return Err(IdError::ProcessName {
                name: s.chars().take(40).collect(),
                reason: "must be 1 to 255 bytes",
            });
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(IdError::ProcessName {
                name: s.to_string(),
                reason: "must not contain whitespace or control characters",
            });
        }
        Ok(ProcessName(Arc::from(s)))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProcessName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ProcessName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl Serialize for ProcessName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ProcessName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ProcessName;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a process name")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ProcessName, E> {
                ProcessName::new(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// A name registered on a given node.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RegisteredName {
    /// Node the name is registered on.
    pub node: NodeName,
    /// The registered name.
    pub name: ProcessName,
}

/// Anything a message can be sent to: a pid, an aliased reference, or a registered name, on any
/// node. Prints and parses as a URI (`partisan:pid:NODE:CREATION.ID`,
/// `partisan:ref:NODE:CREATION.ID`, `partisan:name:NODE:NAME`); parsing the printed form gives
/// back an equal value, and only the canonical form parses (no signs, no leading zeros).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RemoteRef {
    /// A process.
    Pid(Pid),
    /// A reference (delivered to the process that registered it as an alias).
    Ref(Ref),
    /// A registered name.
    Name(RegisteredName),
}

impl RemoteRef {
    /// The node the destination lives on.
    pub fn node(&self) -> &NodeName {
        match self {
            RemoteRef::Pid(p) => &p.node,
            RemoteRef::Ref(r) => &r.node,
            RemoteRef::Name(n) => &n.node,
        }
    }
}

impl From<Pid> for RemoteRef {
    fn from(p: Pid) -> Self {
        RemoteRef::Pid(p)
    }
}

impl From<Ref> for RemoteRef {
    fn from(r: Ref) -> Self {
        RemoteRef::Ref(r)
    }
}

impl From<RegisteredName> for RemoteRef {
    fn from(n: RegisteredName) -> Self {
        RemoteRef::Name(n)
    }
}

const URI_PREFIX: &str = "partisan:";

impl fmt::Display for RemoteRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoteRef::Pid(p) => write!(f, "{URI_PREFIX}pid:{}:{}.{}", p.node, p.creation, p.id),
            RemoteRef::Ref(r) => write!(f, "{URI_PREFIX}ref:{}:{}.{}", r.node, r.creation, r.id),
            RemoteRef::Name(n) => write!(f, "{URI_PREFIX}name:{}:{}", n.node, n.name),
        }
    }
}

impl fmt::Debug for RemoteRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{URI_PREFIX}pid:{}:{}.{}",
            self.node, self.creation, self.id
        )
    }
}

impl fmt::Debug for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{URI_PREFIX}ref:{}:{}.{}",
            self.node, self.creation, self.id
        )
    }
}

impl fmt::Debug for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for RegisteredName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{URI_PREFIX}name:{}:{}", self.node, self.name)
    }
}

impl fmt::Debug for RegisteredName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Parses a canonical decimal u64: digits only, no leading zero unless the number is 0.
fn parse_canonical_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

fn parse_creation_id(uri: &str, s: &str) -> Result<(Creation, u64), IdError> {
    let bad = || IdError::Uri {
        uri: uri.chars().take(300).collect(),
        reason: "expected CREATION.ID as two canonical decimal numbers",
    };
    let (c, i) = s.split_once('.').ok_or_else(bad)?;
    Ok((
        parse_canonical_u64(c).ok_or_else(bad)?,
        parse_canonical_u64(i).ok_or_else(bad)?,
    ))
}

impl FromStr for RemoteRef {
    type Err = IdError;
    fn from_str(uri: &str) -> Result<Self, Self::Err> {
        let err = |reason| IdError::Uri {
            uri: uri.chars().take(300).collect(),
            reason,
        };
        let rest = uri
            .strip_prefix(URI_PREFIX)
            .ok_or_else(|| err("must start with 'partisan:'"))?;
        let (kind, rest) = rest
            .split_once(':')
            .ok_or_else(|| err("expected partisan:KIND:NODE:..."))?;
        let (node, tail) = rest
            .split_once(':')
            .ok_or_else(|| err("expected partisan:KIND:NODE:..."))?;
        let node = NodeName::new(node)?;
        match kind {
            "pid" => {
                let (creation, id) = parse_creation_id(uri, tail)?;
                Ok(RemoteRef::Pid(Pid { node, creation, id }))
            }
            "ref" => {
                let (creation, id) = parse_creation_id(uri, tail)?;
                Ok(RemoteRef::Ref(Ref { node, creation, id }))
            }
            "name" => Ok(RemoteRef::Name(RegisteredName {
                node,
                name: ProcessName::new(tail)?,
            })),
            _ => Err(err("kind must be pid, ref or name")),
        }
    }
}

impl FromStr for Pid {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.parse::<RemoteRef>()? {
            RemoteRef::Pid(p) => Ok(p),
            _ => Err(IdError::Uri {
                uri: s.chars().take(300).collect(),
                reason: "not a pid URI",
            }),
        }
    }
}

impl FromStr for Ref {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.parse::<RemoteRef>()? {
            RemoteRef::Ref(r) => Ok(r),
            _ => Err(IdError::Uri {
                uri: s.chars().take(300).collect(),
                reason: "not a ref URI",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_print_as_documented() {
        let node = NodeName::new("n1@127.0.0.1").unwrap();
        let pid = RemoteRef::Pid(Pid {
            node: node.clone(),
            creation: 17,
            id: 42,
        });
        assert_eq!(pid.to_string(), "partisan:pid:n1@127.0.0.1:17.42");
        let name = RemoteRef::Name(RegisteredName {
            node,
            name: ProcessName::new("store:v1").unwrap(),
        });
        assert_eq!(name.to_string(), "partisan:name:n1@127.0.0.1:store:v1");
        assert_eq!(name.to_string().parse::<RemoteRef>().unwrap(), name);
    }

    #[test]
    fn non_canonical_uris_are_rejected() {
        for bad in [
            "partisan:pid:a@b:1",
            "partisan:pid:a@b:+1.2",
            "partisan:pid:a@b:01.2",
            "partisan:pid:a@b:1.2.3",
            "partisan:ref:a@b:1.",
            "partisan:name:a@b:",
            "partisan:name:a@b:x y",
            "partisan:port:a@b:1.2",
            "partisan:pid:ab:1.2",
            "erlang:pid:a@b:1.2",
            "partisan:pid:a@b:18446744073709551616.1",
        ] {
            assert!(bad.parse::<RemoteRef>().is_err(), "{bad} should not parse");
        }
    }
}
