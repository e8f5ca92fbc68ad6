//! Which overlay a simulated cluster runs, and how its nodes are set up for the network.

use std::sync::Arc;

use partisan_core::id::NodeSpec;
use partisan_core::overlay::{
    ClientServer, FullMesh, FullMeshConfig, HyParView, HyParViewConfig, Overlay, PeerInfo, Role,
    StaticMembership, Tag,
};
use partisan_core::testing::{node_addr, node_name, NodeId, Setup};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The overlay of a simulated cluster.
#[derive(Debug, Clone)]
pub enum OverlayChoice {
    /// HyParView with these parameters.
    HyParView(HyParViewConfig),
    /// Full mesh with these parameters.
    FullMesh(FullMeshConfig),
    /// Client-server: nodes `0..servers` are servers, the others clients.
    ClientServer {
        /// How many servers.
        servers: u32,
    },
    /// Static: every node is configured with every node's spec.
    Static,
}

impl OverlayChoice {
    /// The overlay's name, as the command line spells it.
    pub fn name(&self) -> &'static str {
        match self {
            OverlayChoice::HyParView(_) => "hyparview",
            OverlayChoice::FullMesh(_) => "full-mesh",
            OverlayChoice::ClientServer { .. } => "client-server",
            OverlayChoice::Static => "static",
        }
    }

    /// The period that paces the overlay's repairs (its shuffle or anti-entropy interval), for
    /// healing bounds; overlays without timers use the redial backoff's ceiling.
    pub fn period(&self) -> std::time::Duration {
        match self {
            OverlayChoice::HyParView(h) => h.shuffle_interval,
            OverlayChoice::FullMesh(f) => f.periodic_interval,
            OverlayChoice::ClientServer { .. } | OverlayChoice::Static => {
                std::time::Duration::from_secs(5)
            }
        }
    }

    /// Whether node `i` is a client-server server.
    pub fn is_server(&self, i: NodeId) -> bool {
        matches!(self, OverlayChoice::ClientServer { servers } if i < *servers)
    }

    /// A network setup of `nodes` nodes running this overlay, seeded with `seed`.
    pub fn setup(&self, nodes: u32, seed: u64) -> Setup {
        let factory: partisan_core::testing::OverlayFactory = match self.clone() {
            OverlayChoice::HyParView(cfg) => Arc::new(move |_, info: &PeerInfo, seed| {
                let rng = Box::new(ChaCha8Rng::seed_from_u64(seed));
                Box::new(HyParView::new(info.clone(), cfg.clone(), rng)) as Box<dyn Overlay>
            }),
            OverlayChoice::FullMesh(cfg) => Arc::new(move |_, info: &PeerInfo, seed| {
                let rng = Box::new(ChaCha8Rng::seed_from_u64(seed));
                Box::new(FullMesh::new(info.clone(), cfg.clone(), rng)) as Box<dyn Overlay>
            }),
            OverlayChoice::ClientServer { servers } => Arc::new(move |i, info: &PeerInfo, _| {
                let role = if i < servers {
                    Role::Server
                } else {
                    Role::Client
                };
                Box::new(ClientServer::new(info.clone(), role)) as Box<dyn Overlay>
            }),
            OverlayChoice::Static => Arc::new(move |_, info: &PeerInfo, _| {
                let all: Vec<NodeSpec> = (0..nodes)
                    .map(|j| {
                        NodeSpec::new(
                            node_name(j),
                            vec![node_addr(j)],
                            info.spec.channels().clone(),
                        )
                        .expect("valid simulated spec")
                    })
                    .collect();
                Box::new(StaticMembership::new(info.clone(), all)) as Box<dyn Overlay>
            }),
        };
        let mut setup = Setup::new(nodes, seed, factory);
        if let OverlayChoice::ClientServer { servers } = self {
            setup.tags = (0..nodes)
                .map(|i| {
                    Some(
                        Tag::new(if i < *servers { "server" } else { "client" })
                            .expect("valid tag"),
                    )
                })
                .collect();
        }
        setup
    }
}
