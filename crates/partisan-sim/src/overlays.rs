//! Which overlay a simulated cluster runs, and how its nodes are set up for the network.

use partisan_core::overlay::{FullMeshConfig, HyParViewConfig};
use partisan_core::testing::{NodeId, Setup};

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
        match self {
            OverlayChoice::HyParView(cfg) => Setup::hyparview(nodes, seed, cfg.clone()),
            OverlayChoice::FullMesh(cfg) => Setup::full_mesh(nodes, seed, cfg.clone()),
            OverlayChoice::ClientServer { servers } => Setup::client_server(nodes, seed, *servers),
            OverlayChoice::Static => Setup::static_members(nodes, seed),
        }
    }
}
