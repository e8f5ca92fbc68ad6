//! partisan: a distributed runtime for Rust.
//!
//! Nodes connect over an authenticated transport (TCP by default, or any [`Transport`], such
//! as the in-memory [`MemoryTransport`] for tests) with named channels of several lanes
//! (connections) each; processes on any node message each other by pid, alias reference or
//! registered name. Protocol logic lives in the sans-IO [`partisan_core`]; this crate drives it
//! with tokio.
//!
//! Plumtree broadcast: handlers ([`BroadcastHandler`]) are registered on the builder
//! ([`NodeBuilder::broadcast_handler`]) and used with [`Node::broadcast`]; the replicated
//! key-value map ships ready ([`NodeBuilder::kv_map`], [`Node::kv`]).
//!
//! ```no_run
//! use partisan::{NodeBuilder, SendOptions};
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! let a = NodeBuilder::new("a@127.0.0.1").cookie("s").channel("data", 4).start().await?;
//! let b = NodeBuilder::new("b@127.0.0.1").cookie("s").channel("data", 4).start().await?;
//! let mut inbox = b.process_named("inbox")?;
//! a.connect(b.listen_addrs()[0]).await?;
//! let to = partisan::Node::name_on(b.name(), "inbox")?;
//! a.send(&to, &b"hello"[..], &SendOptions::default()).await?;
//! let msg = inbox.recv().await.unwrap();
//! assert_eq!(&msg.payload[..], b"hello");
//! # Ok(()) }
//! ```
//!
//! Delivery, ordering and failure guarantees are stated in `docs/semantics.md`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod behaviour;
mod broadcast;
mod cluster;
mod config;
mod connection;
mod creation;
mod driver;
mod error;
mod membership;
mod node;
mod process;
mod relay;
mod rpc;
mod send;
mod stats;
mod supervisor;
pub mod transport;

pub use behaviour::{gen_server, gen_statem, CallError, Endpoint, ReplyTo, ServerStartError};
pub use broadcast::{HandlerError, Kv, KvError, TreePeers};
pub use cluster::{NodeFilter, NodeStatus, Subscription};
pub use config::{
    BroadcastSection, ChannelConfig, Config, ConfigError, HyParViewSection, LivenessConfig,
    PingConfig, DEFAULT_WRITE_CHUNK,
};
pub use error::{ConnectError, RegisterError, SendError, StartError};
pub use membership::MembershipEvent;
pub use node::{LaneStatus, Node, NodeBuilder, PeerTarget};
pub use partisan_core::broadcast::kv_map::{KvConfig, KvMap};
pub use partisan_core::broadcast::{
    BroadcastError, BroadcastHandler, ExchangeInfo, ExchangeSelector, ExchangeStep, GraftReply,
    PlumtreeConfig, Receipt,
};
pub use partisan_core::id::{
    ChannelName, ChannelOpts, Creation, NodeName, NodeSpec, Pid, ProcessName, Ref, RegisteredName,
    RemoteRef,
};
pub use partisan_core::overlay::{OverlayError, OverlayKind, Tag};
pub use process::registry::Envelope;
pub use process::{
    Down, ExitReason, ExitSignal, Process, ProcessExit, RecvError, Signal, TimerRef,
};
pub use rpc::{RpcContext, RpcError, RpcRegisterError, RpcStats, SERVER_NAME as RPC_SERVER_NAME};
pub use send::{Dest, Destination, SendOptions};
pub use stats::{BroadcastSnapshot, ChannelSnapshot, ProcessStats, StatsSnapshot};
pub use supervisor::{
    ChildCounts, ChildInfo, ChildSpec, ChildType, Restart, Shutdown, Strategy, Supervisor,
    SupervisorError, DEFAULT_WORKER_SHUTDOWN, REACHED_MAX_RESTART_INTENSITY,
};
pub use transport::{MemoryTransport, TcpTransport, Transport};

pub use partisan_core;
