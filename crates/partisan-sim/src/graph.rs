//! Measures over the overlay graph of live nodes: flood reach, components, symmetry, degrees.

use std::collections::{BTreeMap, VecDeque};

use crate::{Network, NodeId};

/// Directed active-view edges among live nodes (edges to dead nodes are dropped: a flood
/// cannot cross them).
pub struct Graph {
    /// Live node ids, sorted.
    pub live: Vec<NodeId>,
    /// Out-edges per live node (to live nodes), by position in `live`.
    out: Vec<Vec<usize>>,
    /// Directed edges to dead nodes still in some active view.
    pub dead_edges: usize,
}

impl Graph {
    /// Snapshot of the current active views.
    pub fn of(sim: &Network) -> Graph {
        let live = sim.live();
        let pos: BTreeMap<NodeId, usize> = live.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let mut dead_edges = 0;
        let out = live
            .iter()
            .map(|&n| {
                sim.active_ids(n)
                    .into_iter()
                    .filter_map(|m| {
                        let p = pos.get(&m).copied();
                        if p.is_none() {
                            dead_edges += 1;
                        }
                        p
                    })
                    .collect()
            })
            .collect();
        Graph {
            live,
            out,
            dead_edges,
        }
    }

    /// Fraction of live nodes a flood from live node at position `src` reaches, each node
    /// forwarding to its whole active view.
    pub fn flood_reach(&self, src: usize) -> f64 {
        if self.live.is_empty() {
            return 1.0;
        }
        let mut seen = vec![false; self.live.len()];
        let mut q = VecDeque::from([src]);
        seen[src] = true;
        let mut n = 1;
        while let Some(x) = q.pop_front() {
            for &y in &self.out[x] {
                if !seen[y] {
                    seen[y] = true;
                    n += 1;
                    q.push_back(y);
                }
            }
        }
        n as f64 / self.live.len() as f64
    }

    /// Size of the largest connected component, edges taken in both directions.
    pub fn largest_component(&self) -> usize {
        self.component_sizes().into_iter().max().unwrap_or(0)
    }

    /// Sizes of the connected components (edges taken in both directions), largest first.
    pub fn components(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .component_sizes()
            .into_iter()
            .filter(|s| *s > 0)
            .collect();
        v.sort_unstable_by(|a, b| b.cmp(a));
        v
    }

    /// Component size per root position (0 for non-roots).
    fn component_sizes(&self) -> Vec<usize> {
        let n = self.live.len();
        let mut parent: Vec<usize> = (0..n).collect();
        fn find(p: &mut [usize], mut x: usize) -> usize {
            while p[x] != x {
                p[x] = p[p[x]];
                x = p[x];
            }
            x
        }
        for (a, outs) in self.out.iter().enumerate() {
            for &b in outs {
                let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
                if ra != rb {
                    parent[ra] = rb;
                }
            }
        }
        let mut sizes = vec![0usize; n];
        for x in 0..n {
            let r = find(&mut parent, x);
            sizes[r] += 1;
        }
        sizes
    }

    /// Fraction of directed edges whose reverse edge exists (1.0 with no edges).
    pub fn symmetry(&self) -> f64 {
        let mut total = 0usize;
        let mut mutual = 0usize;
        for (a, outs) in self.out.iter().enumerate() {
            for &b in outs {
                total += 1;
                if self.out[b].contains(&a) {
                    mutual += 1;
                }
            }
        }
        if total == 0 {
            1.0
        } else {
            mutual as f64 / total as f64
        }
    }

    /// How many live nodes have each in-degree (live in-edges), by degree.
    pub fn in_degrees(&self) -> BTreeMap<usize, usize> {
        let mut deg = vec![0usize; self.live.len()];
        for outs in &self.out {
            for &b in outs {
                deg[b] += 1;
            }
        }
        let mut hist = BTreeMap::new();
        for d in deg {
            *hist.entry(d).or_default() += 1;
        }
        hist
    }
}
