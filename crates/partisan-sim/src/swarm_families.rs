//! The swarm's newer scenario families, drawn from a stream of their own so that a seed that
//! draws neither runs exactly the scenario it ran before they existed:
//!
//! - `long-split` (every overlay): once the cluster has formed, it is split in two sides (a
//!   partition both ways between every pair across) for 10 to 100 overlay periods, with
//!   broadcasts, process actions and every timer running; then the network heals.
//! - `loss` (client-server and static): every overlay frame (Hello, Welcome, Announce,
//!   Leaving) is lost with a probability of 5 to 60 % from the first join to the end of the
//!   faulty phase, while nodes crash, restart, leave and rejoin; some nodes leave for good, and
//!   some restarted servers do not join again (they must relearn everyone from the greetings
//!   of those who know them). Then nothing is lost.

use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::OverlayChoice;

/// The share of scenarios in the long-split family.
pub const LONG_SPLIT_SHARE: f64 = 0.05;
/// The share of client-server and static scenarios in the loss family (of those not drawn
/// for a long split).
pub const LOSS_SHARE: f64 = 0.2;
/// Fewest overlay periods a long split lasts.
pub const SPLIT_MIN_PERIODS: u32 = 10;
/// Most overlay periods a long split lasts.
pub const SPLIT_MAX_PERIODS: u32 = 100;
/// Periods a HyParView cluster gets to merge after a long split (the healing bound is 40
/// otherwise). By then each side has a full overlay of its own and no node of the other side
/// in its views, so the sides find each other only when some node's exploration tries a node
/// it remembers from the other side; a node that sees no failure explores once every 64
/// periods (the explorer's `MAX_EVERY`) and retries a remembered node that failed at most 64
/// periods later. One such cycle, and 10 periods to merge. Measured over 1,018 long splits on
/// HyParView (seeds 1 to 80,000): a median of 1.2 periods, 99th percentile 22, at most 36.2.
pub const HYPARVIEW_MERGE_PERIODS: u32 = 64 + 10;

/// A scenario of one of the newer families, as drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Special {
    /// The cluster splits `after` the joins window and stays split for `periods` periods
    /// of `period` each.
    LongSplit {
        /// From the end of the joins window to the split.
        after: Duration,
        /// The overlay's period.
        period: Duration,
        /// How many periods the split lasts.
        periods: u32,
    },
    /// Overlay frames are lost with probability `rate` during the faulty phase.
    Loss {
        /// Probability that an overlay frame is lost.
        rate: f64,
    },
}

impl Special {
    /// The faulty phase (after the joins window): up to the heal of a long split.
    pub fn window(&self, chaos: Duration) -> Duration {
        match *self {
            Special::LongSplit {
                after,
                period,
                periods,
            } => after + period * periods,
            Special::Loss { .. } => chaos,
        }
    }
}

/// The period that paces an overlay's repairs, which a long split counts in: the shuffle
/// interval of HyParView, the anti-entropy interval of full mesh, the greeting interval of
/// client-server, and for static (no timer) the redial backoff's ceiling.
pub fn split_period(choice: &OverlayChoice) -> Duration {
    match choice {
        OverlayChoice::ClientServer { .. } => partisan_core::overlay::client_server::DEFAULT_PERIOD,
        other => other.period(),
    }
}

/// Whether the scenario of this stream belongs to a newer family, and its draws.
pub fn draw(g: &mut ChaCha8Rng, choice: &OverlayChoice) -> Option<Special> {
    if g.gen_bool(LONG_SPLIT_SHARE) {
        let period = split_period(choice);
        return Some(Special::LongSplit {
            after: Duration::from_micros(g.gen_range(0..=3 * period.as_micros() as u64)),
            period,
            periods: g.gen_range(SPLIT_MIN_PERIODS..=SPLIT_MAX_PERIODS),
        });
    }
    let lossy = matches!(
        choice,
        OverlayChoice::ClientServer { .. } | OverlayChoice::Static
    );
    (lossy && g.gen_bool(LOSS_SHARE)).then(|| Special::Loss {
        rate: g.gen_range(0.05..0.6),
    })
}

/// Two sides of `nodes` nodes, neither empty (`true`: the first side).
pub fn sides(g: &mut ChaCha8Rng, nodes: u32) -> Vec<bool> {
    let mut side: Vec<bool> = (0..nodes).map(|_| g.gen_bool(0.5)).collect();
    if nodes >= 2 {
        let first = side.iter().filter(|s| **s).count();
        if first == 0 || first == nodes as usize {
            let k = g.gen_range(0..nodes as usize);
            side[k] = !side[k];
        }
    }
    side
}
