//! Channels and node specs: what a node tells its peers about itself.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{IdError, NodeName};

/// Longest accepted channel name, in bytes.
pub const MAX_CHANNEL_NAME_LEN: usize = 64;
/// Largest number of lanes (connections per peer) a channel may have.
pub const MAX_PARALLELISM: u16 = 256;
/// Most channels a node spec may declare (including the two built-in ones).
pub const MAX_CHANNELS: usize = 64;
/// Most listen addresses a node spec may declare.
pub const MAX_LISTEN_ADDRS: usize = 16;

/// The name of a channel: 1 to 64 ASCII letters, digits, `_`, `-` or `.`.
///
/// Two channels always exist: [`ChannelName::DEFAULT`] (`default`) and
/// [`ChannelName::MEMBERSHIP`] (`membership`, used by control traffic).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChannelName(Arc<str>);

impl ChannelName {
    /// Name of the default channel.
    pub const DEFAULT: &'static str = "default";
    /// Name of the channel carrying membership and overlay control traffic.
    pub const MEMBERSHIP: &'static str = "membership";

    /// Parses and validates a channel name.
    pub fn new(s: &str) -> Result<Self, IdError> {
        if s.is_empty() || s.len() > MAX_CHANNEL_NAME_LEN {
            return Err(IdError::ChannelName {
                name: s.chars().take(80).collect(),
                reason: "must be 1 to 64 bytes",
            });
        }
        if !s
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-' || c == b'.')
        {
            return Err(IdError::ChannelName {
                name: s.to_string(),
                reason: "only ASCII letters, digits, '_', '-' and '.' are allowed",
            });
        }
        Ok(ChannelName(Arc::from(s)))
    }

    /// The `default` channel.
    pub fn default_channel() -> Self {
        ChannelName(Arc::from(Self::DEFAULT))
    }

    /// The `membership` channel.
    pub fn membership() -> Self {
        ChannelName(Arc::from(Self::MEMBERSHIP))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the `default` channel.
    pub fn is_default(&self) -> bool {
        &*self.0 == Self::DEFAULT
    }

    /// Whether this is the `membership` channel.
    pub fn is_membership(&self) -> bool {
        &*self.0 == Self::MEMBERSHIP
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl FromStr for ChannelName {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ChannelName::new(s)
    }
}

impl Serialize for ChannelName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ChannelName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ChannelName;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a channel name")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ChannelName, E> {
                ChannelName::new(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// Per-channel options, as advertised in a [`NodeSpec`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelOpts {
    /// Number of lanes (connections) per peer for this channel, 1 to [`MAX_PARALLELISM`].
    pub parallelism: u16,
    /// Latest-value-wins channel: under backlog the oldest queued message of a lane is dropped
    /// instead of holding the sender back (see `docs/semantics.md`).
    pub monotonic: bool,
}

impl Default for ChannelOpts {
    fn default() -> Self {
        ChannelOpts {
            parallelism: 1,
            monotonic: false,
        }
    }
}

impl ChannelOpts {
    /// Options with the given parallelism, not monotonic.
    pub fn with_parallelism(parallelism: u16) -> Self {
        ChannelOpts {
            parallelism,
            monotonic: false,
        }
    }
}

/// What a node advertises about itself: its name, where it listens, and its channels.
///
/// Invariants (checked by [`NodeSpec::new`] and on decode): listen addresses are sorted and
/// deduplicated (so two specs of the same node compare equal however they were built); the
/// `default` and `membership` channels are present; every parallelism is within
/// 1..=[`MAX_PARALLELISM`]; `membership` is never monotonic. A spec is immutable and shared:
/// cloning it is a reference-count increment (membership tables hold thousands of them).
#[derive(Clone, PartialEq, Eq)]
pub struct NodeSpec(Arc<SpecInner>);

#[derive(Debug, PartialEq, Eq, Serialize)]
struct SpecInner {
    name: NodeName,
    listen_addrs: Vec<SocketAddr>,
    channels: BTreeMap<ChannelName, ChannelOpts>,
}

impl fmt::Debug for NodeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeSpec")
            .field("name", &self.0.name)
            .field("listen_addrs", &self.0.listen_addrs)
            .field("channels", &self.0.channels)
            .finish()
    }
}

impl Serialize for NodeSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl NodeSpec {
    /// Builds a spec, adding the built-in channels when missing and normalising the addresses.
    pub fn new(
        name: NodeName,
        mut listen_addrs: Vec<SocketAddr>,
        mut channels: BTreeMap<ChannelName, ChannelOpts>,
    ) -> Result<Self, IdError> {
        listen_addrs.sort();
        listen_addrs.dedup();
        if listen_addrs.len() > MAX_LISTEN_ADDRS {
            return Err(IdError::Spec("more than 16 listen addresses"));
        }
        channels.entry(ChannelName::default_channel()).or_default();
        let membership = channels.entry(ChannelName::membership()).or_default();
        membership.monotonic = false;
        if channels.len() > MAX_CHANNELS {
            return Err(IdError::Spec("more than 64 channels"));
        }
        for opts in channels.values() {
            if opts.parallelism == 0 || opts.parallelism > MAX_PARALLELISM {
                return Err(IdError::Spec("channel parallelism must be 1 to 256"));
            }
        }
        Ok(NodeSpec(Arc::new(SpecInner {
            name,
            listen_addrs,
            channels,
        })))
    }

    /// The node's name.
    pub fn name(&self) -> &NodeName {
        &self.0.name
    }

    /// Sorted, deduplicated listen addresses.
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        &self.0.listen_addrs
    }

    /// Channels with their options, ordered by name.
    pub fn channels(&self) -> &BTreeMap<ChannelName, ChannelOpts> {
        &self.0.channels
    }

    /// Options of one channel, if the node has it.
    pub fn channel(&self, name: &ChannelName) -> Option<&ChannelOpts> {
        self.0.channels.get(name)
    }

    /// Total number of lanes over all channels: the connection count of a fully connected peer.
    pub fn total_lanes(&self) -> usize {
        self.0
            .channels
            .values()
            .map(|o| o.parallelism as usize)
            .sum()
    }

    /// Every (channel, lane) slot this spec asks its peers to keep up, in order.
    pub fn lanes(&self) -> impl Iterator<Item = (&ChannelName, u16)> + '_ {
        self.0
            .channels
            .iter()
            .flat_map(|(c, o)| (0..o.parallelism).map(move |l| (c, l)))
    }

    /// Whether (`channel`, `lane`) is a slot of this spec.
    pub fn has_lane(&self, channel: &ChannelName, lane: u16) -> bool {
        self.0
            .channels
            .get(channel)
            .is_some_and(|o| lane < o.parallelism)
    }
}

impl<'de> Deserialize<'de> for NodeSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            name: NodeName,
            listen_addrs: Vec<SocketAddr>,
            channels: BTreeMap<ChannelName, ChannelOpts>,
        }
        let raw = Raw::deserialize(d)?;
        let spec = NodeSpec::new(raw.name, raw.listen_addrs, raw.channels)
            .map_err(serde::de::Error::custom)?;
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn spec_normalises_addresses_and_adds_builtin_channels() {
        let a = NodeSpec::new(
            NodeName::new("a@h").unwrap(),
            vec![
                addr("127.0.0.2:2"),
                addr("127.0.0.1:1"),
                addr("127.0.0.2:2"),
            ],
            BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(
            a.listen_addrs(),
            &[addr("127.0.0.1:1"), addr("127.0.0.2:2")]
        );
        assert!(a.channel(&ChannelName::default_channel()).is_some());
        assert!(a.channel(&ChannelName::membership()).is_some());
        assert_eq!(a.total_lanes(), 2);
    }

    #[test]
    fn spec_rejects_bad_parallelism_and_forces_membership_not_monotonic() {
        let mut ch = BTreeMap::new();
        ch.insert(
            ChannelName::new("x").unwrap(),
            ChannelOpts::with_parallelism(0),
        );
        assert!(NodeSpec::new(NodeName::new("a@h").unwrap(), vec![], ch).is_err());
        let mut ch = BTreeMap::new();
        ch.insert(
            ChannelName::membership(),
            ChannelOpts {
                parallelism: 2,
                monotonic: true,
            },
        );
        let s = NodeSpec::new(NodeName::new("a@h").unwrap(), vec![], ch).unwrap();
        assert!(!s.channel(&ChannelName::membership()).unwrap().monotonic);
        assert_eq!(s.lanes().count(), 3);
        assert!(s.has_lane(&ChannelName::membership(), 1));
        assert!(!s.has_lane(&ChannelName::membership(), 2));
    }

    #[test]
    fn channel_names_are_validated() {
        assert!(ChannelName::new("vnode_1.x-y").is_ok());
        assert!(ChannelName::new("").is_err());
        assert!(ChannelName::new("a b").is_err());
        assert!(ChannelName::new(&"c".repeat(65)).is_err());
    }
}
