//! The processes of a swarm scenario: simulated processes spawned on random nodes that monitor
//! and link processes of other nodes (by pid and by registered name), end normally or not,
//! demonitor, unlink, send exit signals and ask whether others are alive, while nodes crash,
//! restart, leave and are cut off. [`ProcessBook`] drives them and keeps its own account of
//! what it asked, checked against what each node's simulated processes received
//! ([`partisan_core::testing::SimProcesses`]) and what each engine's signal table holds.
//!
//! Checked after every event, on the node it touched (and on every node after each command
//! the scenario gives):
//! - every `Down` is for a monitor made on that node, to its watcher, about its target; at most
//!   one per monitor; none after the monitor was withdrawn (demonitor) or its watcher ended;
//!   with a possible reason: the exit reason of the target (or, for a name, of a process that
//!   held it) if it ended after the monitor was made, `noproc` if the target was gone (for a
//!   name: nobody held it at some point), `noconnection` if the watcher's node holds no open
//!   lane to the incarnation the monitor was made with, or either node lost the other since
//!   (or had, unheard), as the engines' signal sessions tell;
//! - every link exit signal is for a link made between the two processes, at most one per link
//!   and side, none to a side after it unlinked, none to a process already ended (but from a
//!   peer's loss that fired several of its links at once), with a possible reason (the other
//!   side's exit reason, `noproc` with the other side gone, `noconnection` without an open lane
//!   to its incarnation); every other exit signal was sent by a process; every liveness answer
//!   possible (alive: the process lived after the question; dead: it is gone) and given once;
//! - the signal table: exactly as many monitors of peers' processes as the book counts made
//!   there and not yet fired, withdrawn or ended with their watcher; nothing on a node without
//!   a live process but liveness queries; nothing about a peer the node holds no lane to.
//!
//! Checked once the network has settled ([`ProcessBook::owed`]): every monitor whose watcher is
//! alive and was not withdrawn, and whose target ended, was lost with its node, or is cut off
//! (no lane to the incarnation it was made with), got exactly one `Down`; every link of which
//! one side is gone delivered exactly one exit signal to the other side if it is alive, unless
//! either side unlinked (the side that did not ask for the link may never have heard of it, if
//! the connection broke meanwhile or the link was refused at once); every liveness query was
//! answered. At the end every process ends, in rounds, and every table is empty.
//!
//! Two things are left out, each a known gap rather than a rule the swarm checks:
//! - A partition of the simulated network drops frames on connections that stay up (TCP would
//!   deliver them late). A monitor, link or query that may have lost a frame so (one made
//!   during a partition between its nodes or just before it, or whose target ended during it)
//!   is *exposed*: its exactly-once is not checked, only at most once.
//! - A link is unlinked only by the one side that asked for it: an unlink while a `Link` from
//!   the other side is still in flight is a no-op there (or is undone by it), the link forms on
//!   that side alone, and its exit signal can come after the unlink.

mod checks;

use std::collections::{BTreeMap, BTreeSet};

use partisan_core::engine::{Answer, Command, Waiter};
use partisan_core::id::{Creation, Pid, ProcessName, RegisteredName, RemoteRef};
use partisan_core::signals::{ExitReason, SignalCounts};
use partisan_core::time::Instant;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::{Network, NodeId};

/// A process: its node, that node's creation, its id.
type PKey = (NodeId, Creation, u64);
/// A monitor: the watcher's node, its creation, the reference id.
type MKey = (NodeId, Creation, u64);

/// Names processes register under, on every node.
const NAMES: [&str; 3] = ["alpha", "beta", "gamma"];
/// Longest a frame takes across the network (latencies are at most 100 ms), with margin: a
/// partition that starts this soon after a frame was sent may drop the peer's answer to it.
const IN_FLIGHT: std::time::Duration = std::time::Duration::from_secs(1);
/// First waiter id of liveness queries (clear of the ids the network uses itself).
const FIRST_WAITER: u64 = 1 << 40;

#[derive(Clone, Debug, PartialEq)]
enum End {
    /// Ended with this reason.
    Exited(ExitReason),
    /// Its node crashed.
    Lost,
}

#[derive(Clone, Debug)]
struct Proc {
    born: Instant,
    end: Option<(Instant, End)>,
}

#[derive(Clone, Debug)]
enum Watched {
    Pid(PKey),
    Name(NodeId, ProcessName),
}

#[derive(Clone, Debug)]
struct Mon {
    watcher: PKey,
    target: RemoteRef,
    watched: Watched,
    issued: Instant,
    /// The target node's incarnation as the watcher's engine held it (connected) then.
    bound: Option<Creation>,
    /// Still in the table, as far as the book knows.
    open: bool,
    downs: Vec<ExitReason>,
    /// The number of `Down`s delivered on the watcher's node when it was demonitored.
    demonitored: Option<usize>,
    /// The watcher's node crashed: nothing more is checked.
    void: bool,
    /// A partition between the two nodes may have dropped one of its frames.
    exposed: bool,
    /// The connection between the two nodes when it was made.
    pair_at: PairState,
    /// Their signal sessions when it was made.
    sessions_at: Sessions,
}

impl Mon {
    /// The target's node.
    fn node(&self) -> NodeId {
        match &self.watched {
            Watched::Pid(k) => k.0,
            Watched::Name(j, _) => *j,
        }
    }
}

#[derive(Clone, Debug)]
struct Link {
    /// The two processes, in order.
    sides: [PKey; 2],
    /// Which side asked for the link.
    made_by: [bool; 2],
    /// Which side's link was refused at once (no lane to the other, another incarnation).
    refused: [bool; 2],
    /// The connection between the two nodes when the link was first made.
    pair_at: PairState,
    /// Their signal sessions then.
    sessions_at: Sessions,
    /// Exit signals of the link delivered to each side.
    exits: [u32; 2],
    /// The number of exit signals delivered on a side's node when that side unlinked.
    unlinked: [Option<usize>; 2],
    /// When a side last asked for it.
    made_at: Instant,
    /// A partition between the two nodes may have dropped one of its frames.
    exposed: bool,
}

#[derive(Clone, Debug)]
struct Query {
    node: NodeId,
    creation: Creation,
    target: NodeId,
    pid: PKey,
    made_at: Instant,
    answered: u32,
    void: bool,
    exposed: bool,
}

/// What a node's records have been read up to.
#[derive(Clone, Copy, Debug, Default)]
struct Seen {
    creation: Creation,
    downs: usize,
    exits: usize,
    ended: usize,
    answers: usize,
}

/// Whether the nodes of a pair are connected, as each of their engines last said, and how
/// often that broke.
#[derive(Clone, Copy, Debug, Default)]
struct PairState {
    state: [Option<Creation>; 2],
    /// Breaks: either side losing its open lanes to the other, or either crashing.
    breaks: u64,
    /// How often each side lost its open lanes to the other (crashes aside).
    lost: [u64; 2],
}

/// Figures of a scenario's processes.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct ProcessFigures {
    /// Processes spawned.
    pub spawned: u32,
    /// Monitors made.
    pub monitors: u32,
    /// Of which by registered name.
    pub by_name: u32,
    /// Links made.
    pub links: u32,
    /// Demonitors.
    pub demonitors: u32,
    /// Unlinks.
    pub unlinks: u32,
    /// `Down`s delivered.
    pub downs: u32,
    /// Of which `noconnection`.
    pub downs_noconnection: u32,
    /// Of which `noproc`.
    pub downs_noproc: u32,
    /// Link exit signals delivered.
    pub link_exits: u32,
    /// Other exit signals delivered.
    pub exits: u32,
    /// Processes ended by an exit signal.
    pub killed_by_signal: u32,
    /// Liveness queries.
    pub queries: u32,
    /// Monitors and links a partition may have dropped a frame of (exactly-once not checked).
    pub exposed: u32,
}

/// The processes of a scenario and the account of what was asked of them. See the module
/// documentation.
#[derive(Debug)]
pub struct ProcessBook {
    procs: BTreeMap<PKey, Proc>,
    live: BTreeSet<PKey>,
    /// (node, creation, name) -> every process that held it.
    names: BTreeMap<(NodeId, Creation, ProcessName), Vec<PKey>>,
    monitors: BTreeMap<MKey, Mon>,
    by_watcher: BTreeMap<PKey, Vec<MKey>>,
    /// Monitors in each node's table, as the book counts them.
    open_out: Vec<usize>,
    links: BTreeMap<(PKey, PKey), Link>,
    /// Exit signals sent by processes and not delivered yet, by receiver.
    sent_exits: BTreeMap<PKey, Vec<ExitReason>>,
    queries: BTreeMap<u64, Query>,
    next_waiter: u64,
    seen: Vec<Seen>,
    pairs: BTreeMap<(NodeId, NodeId), PairState>,
    interest: Vec<BTreeSet<NodeId>>,
    /// Partitions in force, one way each, as the network has them.
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Figures so far.
    pub figures: ProcessFigures,
    debug: bool,
}

fn key_of(sim: &Network, pid: &Pid) -> Option<PKey> {
    Some((sim.id_of(&pid.node)?, pid.creation, pid.id))
}

/// The incarnation of `j` node `n`'s engine holds an open lane to, if any.
fn peer_state(sim: &Network, n: NodeId, j: NodeId) -> Option<Creation> {
    let e = sim.engine(n);
    let name = sim.name_of(j);
    if !e.is_connected(name) {
        return None;
    }
    e.identity_of(name).map(|i| i.creation)
}

/// The signal sessions of a pair of nodes, in pair order: each one's own with the other and the
/// other's it heard.
type Sessions = [Option<(u64, u64)>; 2];

fn sessions(sim: &Network, a: NodeId, b: NodeId) -> Sessions {
    let (x, y) = pair(a, b);
    let of = |n: NodeId, j: NodeId| {
        let node = sim.node(n);
        if node.alive {
            node.engine.signal_session(sim.name_of(j))
        } else {
            None
        }
    };
    [of(x, y), of(y, x)]
}

/// Whether one of the pair lost the other since `then`, or had lost it then without the other
/// having heard yet: either way the engines fire `noconnection` for entries made then.
fn session_broke(sim: &Network, a: NodeId, b: NodeId, then: &Sessions) -> bool {
    let now = sessions(sim, a, b);
    let mine = |s: &Sessions, i: usize| s[i].map(|(m, _)| m);
    let heard = |s: &Sessions, i: usize| s[i].map(|(_, h)| h);
    let unheard_then = heard(then, 0) != mine(then, 1) || heard(then, 1) != mine(then, 0);
    let lost_since = mine(&now, 0) != mine(then, 0) || mine(&now, 1) != mine(then, 1);
    unheard_then || lost_since
}

fn pair(a: NodeId, b: NodeId) -> (NodeId, NodeId) {
    (a.min(b), a.max(b))
}

fn short(r: &ExitReason) -> String {
    let s = r.to_string();
    if s.len() > 40 {
        let head: String = s.chars().take(40).collect();
        format!("{head}... ({} bytes)", s.len())
    } else {
        s
    }
}

/// A random exit reason: mostly normal, sometimes a long text (over the limit a few times).
pub fn random_reason(g: &mut ChaCha8Rng) -> ExitReason {
    match g.gen_range(0..10) {
        0..=3 => ExitReason::Normal,
        4 => ExitReason::Shutdown,
        5 => ExitReason::panic(format!("panicked at step {}", g.gen_range(0..1000))),
        6 => ExitReason::Killed,
        _ => {
            let len = if g.gen_bool(0.1) {
                g.gen_range(1_000..=70_000)
            } else {
                g.gen_range(0..200)
            };
            let c = ['x', 'é', '∂', '😀'][g.gen_range(0..4)];
            let mut s = String::from("error: ");
            while s.len() < len {
                s.push(c);
            }
            ExitReason::error(s)
        }
    }
}

impl ProcessBook {
    /// An empty book for a network of `nodes` nodes.
    pub fn new(nodes: u32) -> ProcessBook {
        ProcessBook {
            procs: BTreeMap::new(),
            live: BTreeSet::new(),
            names: BTreeMap::new(),
            monitors: BTreeMap::new(),
            by_watcher: BTreeMap::new(),
            open_out: vec![0; nodes as usize],
            links: BTreeMap::new(),
            sent_exits: BTreeMap::new(),
            queries: BTreeMap::new(),
            next_waiter: FIRST_WAITER,
            seen: vec![
                Seen {
                    creation: 1,
                    ..Seen::default()
                };
                nodes as usize
            ],
            pairs: BTreeMap::new(),
            interest: vec![BTreeSet::new(); nodes as usize],
            cut: BTreeSet::new(),
            figures: ProcessFigures::default(),
            debug: std::env::var("PARTISAN_SWARM_DEBUG").is_ok(),
        }
    }

    /// Live processes (of live nodes).
    pub fn live_count(&self) -> usize {
        self.live.len()
    }

    // ----- actions -----

    /// Spawns a process on live node `n`, registered under a free name of `NAMES` when
    /// `named` and one is free.
    pub fn spawn(&mut self, sim: &mut Network, n: NodeId, named: Option<usize>) -> Option<Pid> {
        if !sim.node(n).alive {
            return None;
        }
        let pid = sim.spawn_process(n);
        self.say(sim, || format!("spawn {pid}"));
        let key = (n, pid.creation, pid.id);
        self.procs.insert(
            key,
            Proc {
                born: sim.now,
                end: None,
            },
        );
        self.live.insert(key);
        self.figures.spawned += 1;
        if let Some(k) = named {
            let name = ProcessName::new(NAMES[k % NAMES.len()]).expect("a valid name");
            if sim.register_process(n, pid.id, name.clone()) {
                self.names
                    .entry((n, pid.creation, name))
                    .or_default()
                    .push(key);
            }
        }
        Some(pid)
    }

    fn say(&self, sim: &Network, what: impl FnOnce() -> String) {
        if self.debug {
            eprintln!("[{:>10.6}s] book: {}", sim.now.0 as f64 / 1e6, what());
        }
    }

    fn note_interest(&mut self, sim: &Network, a: NodeId, b: NodeId) {
        self.interest[a as usize].insert(b);
        self.interest[b as usize].insert(a);
        let (x, y) = pair(a, b);
        let st = self.pairs.entry((x, y)).or_default();
        if sim.node(x).alive {
            st.state[0] = peer_state(sim, x, y);
        }
        if sim.node(y).alive {
            st.state[1] = peer_state(sim, y, x);
        }
    }

    fn pair_state(&self, a: NodeId, b: NodeId) -> PairState {
        self.pairs.get(&pair(a, b)).copied().unwrap_or_default()
    }

    /// For a failure: how often each of `a` and `b` lost its lanes to the other since `then`
    /// (a loss one side saw and the other did not leaves entries behind on the other).
    fn losses_since(&self, a: NodeId, b: NodeId, then: &PairState) -> String {
        let now = self.pair_state(a, b);
        let (x, y) = pair(a, b);
        let up = |c: Option<Creation>| if c.is_some() { "had" } else { "had no" };
        format!(
            "when it was made n{x} {} open lanes to n{y} and n{y} {} to n{x}; since then \
             n{x} lost its lanes to n{y} {} times, n{y} to n{x} {} times, crashes {}",
            up(then.state[0]),
            up(then.state[1]),
            now.lost[0] - then.lost[0],
            now.lost[1] - then.lost[1],
            (now.breaks - then.breaks)
                - (now.lost[0] - then.lost[0])
                - (now.lost[1] - then.lost[1])
        )
    }

    fn is_cut(&self, a: NodeId, b: NodeId) -> bool {
        self.cut.contains(&(a, b)) || self.cut.contains(&(b, a))
    }

    /// The network now drops frames from `a` to `b` (and from `b` to `a` when `both`), even
    /// on connections that stay up. A frame of a monitor, link or query between the two sent
    /// from now on may be lost: those made now or while the partition holds, those whose
    /// target ends meanwhile (their `Down` or exit signal), and those made just before (the
    /// peer's answer to a frame still in flight) are exposed: exactly-once is not checked of
    /// them. The simulated network loses such frames where TCP would deliver them late.
    pub fn partition(&mut self, sim: &Network, a: NodeId, b: NodeId, both: bool) {
        self.cut.insert((a, b));
        if both {
            self.cut.insert((b, a));
        }
        let p = pair(a, b);
        let recent = |t: Instant| sim.now.0.saturating_sub(t.0) <= IN_FLIGHT.as_micros() as u64;
        for m in self.monitors.values_mut() {
            if !m.exposed
                && m.downs.is_empty()
                && recent(m.issued)
                && pair(m.watcher.0, m.node()) == p
            {
                m.exposed = true;
            }
        }
        for l in self.links.values_mut() {
            if !l.exposed && recent(l.made_at) && pair(l.sides[0].0, l.sides[1].0) == p {
                l.exposed = true;
            }
        }
        for q in self.queries.values_mut() {
            if !q.exposed && recent(q.made_at) && pair(q.node, q.target) == p {
                q.exposed = true;
            }
        }
    }

    /// Process `k` ended: a `Down` or exit signal it sends across a partition may be lost.
    fn expose_ended(&mut self, k: PKey) {
        let n = k.0;
        if !self.cut.iter().any(|(x, y)| *x == n || *y == n) {
            return;
        }
        let cut = &self.cut;
        let is_cut = |a: NodeId, b: NodeId| cut.contains(&(a, b)) || cut.contains(&(b, a));
        for m in self.monitors.values_mut() {
            if !m.exposed && m.node() == n && is_cut(n, m.watcher.0) {
                m.exposed = true;
            }
        }
        for l in self.links.values_mut() {
            if !l.exposed && l.sides.contains(&k) && is_cut(l.sides[0].0, l.sides[1].0) {
                l.exposed = true;
            }
        }
    }

    /// Every partition healed.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Live process `watcher` of node `n` monitors `target` (on another node).
    pub fn monitor(
        &mut self,
        sim: &mut Network,
        n: NodeId,
        watcher: u64,
        target: RemoteRef,
    ) -> Result<(), String> {
        let creation = sim.node(n).info.creation;
        let Some(j) = sim.id_of(target.node()) else {
            return Ok(());
        };
        if !self.live.contains(&(n, creation, watcher)) || j == n {
            return Ok(());
        }
        self.note_interest(sim, n, j);
        let bound = peer_state(sim, n, j);
        let watched = match &target {
            RemoteRef::Pid(p) => Watched::Pid((j, p.creation, p.id)),
            RemoteRef::Name(r) => {
                self.figures.by_name += 1;
                Watched::Name(j, r.name.clone())
            }
            RemoteRef::Ref(_) => return Ok(()),
        };
        let id = sim.monitor(n, watcher, target.clone());
        self.say(sim, || {
            format!("n{n}: {watcher} monitors {target} as {id} (bound {bound:?})")
        });
        let key = (n, creation, id);
        self.figures.monitors += 1;
        self.monitors.insert(
            key,
            Mon {
                watcher: (n, creation, watcher),
                target,
                watched,
                issued: sim.now,
                bound,
                open: true,
                downs: Vec::new(),
                demonitored: None,
                void: false,
                exposed: self.is_cut(n, j),
                pair_at: self.pair_state(n, j),
                sessions_at: sessions(sim, n, j),
            },
        );
        self.open_out[n as usize] += 1;
        self.by_watcher
            .entry((n, creation, watcher))
            .or_default()
            .push(key);
        // A Down at once (no lane, another incarnation) is read here; otherwise it is in the
        // table.
        self.observe(sim, n)?;
        let m = &self.monitors[&key];
        if m.bound.is_some() && !m.downs.is_empty() && m.downs != [ExitReason::NoProc] {
            return Err(format!(
                "n{n}: monitor {id} of {} fired at once with {} although connected",
                m.target,
                short(&m.downs[0])
            ));
        }
        Ok(())
    }

    /// Withdraws monitor `key`.
    pub fn demonitor(&mut self, sim: &mut Network, key: MKey) -> Result<(), String> {
        let (n, creation, id) = key;
        if sim.node(n).info.creation != creation || !sim.node(n).alive {
            return Ok(());
        }
        let mark = sim.node(n).processes.downs.len();
        let Some(m) = self.monitors.get_mut(&key) else {
            return Ok(());
        };
        if m.demonitored.is_some() || !self.live.contains(&m.watcher) {
            return Ok(());
        }
        m.demonitored = Some(mark);
        if m.open {
            m.open = false;
            self.open_out[n as usize] -= 1;
        }
        self.figures.demonitors += 1;
        self.say(sim, || format!("n{n}: demonitor {id}"));
        sim.command(n, Command::Demonitor { monitor: id });
        self.observe(sim, n)
    }

    /// Live process `local` of node `n` links with `remote` (of another node).
    pub fn link(
        &mut self,
        sim: &mut Network,
        n: NodeId,
        local: u64,
        remote: Pid,
    ) -> Result<(), String> {
        let creation = sim.node(n).info.creation;
        let me = (n, creation, local);
        let Some(other) = key_of(sim, &remote) else {
            return Ok(());
        };
        if !self.live.contains(&me) || other.0 == n {
            return Ok(());
        }
        let k = (me.min(other), me.max(other));
        if self
            .links
            .get(&k)
            .is_some_and(|l| l.unlinked.iter().any(Option::is_some))
        {
            // A pair once unlinked is not linked again (the book keeps one link per pair).
            return Ok(());
        }
        self.note_interest(sim, n, other.0);
        let side = usize::from(me != k.0);
        let pair_at = self.pair_state(n, other.0);
        let exposed = self.is_cut(n, other.0);
        let l = self.links.entry(k).or_insert(Link {
            sides: [k.0, k.1],
            made_by: [false; 2],
            refused: [false; 2],
            pair_at,
            sessions_at: sessions(sim, n, other.0),
            exits: [0; 2],
            unlinked: [None; 2],
            made_at: sim.now,
            exposed,
        });
        l.exposed |= exposed;
        l.made_at = sim.now;
        if l.exits.iter().any(|e| *e > 0) {
            // Already fired: a new link would be another one.
            return Ok(());
        }
        l.made_by[side] = true;
        self.figures.links += 1;
        self.say(sim, || format!("n{n}: {local} links {remote}"));
        sim.command(n, Command::Link { local, remote });
        self.observe(sim, n)?;
        let l = self.links.get_mut(&k).expect("made");
        if l.exits[side] > 0 {
            l.refused[side] = true;
        }
        Ok(())
    }

    /// Live process `local` of node `n` unlinks `remote`.
    pub fn unlink(
        &mut self,
        sim: &mut Network,
        n: NodeId,
        local: u64,
        remote: Pid,
    ) -> Result<(), String> {
        let creation = sim.node(n).info.creation;
        let me = (n, creation, local);
        let Some(other) = key_of(sim, &remote) else {
            return Ok(());
        };
        if !self.live.contains(&me) {
            return Ok(());
        }
        let k = (me.min(other), me.max(other));
        let mark = sim.node(n).processes.exits.len();
        let Some(l) = self.links.get_mut(&k) else {
            return Ok(());
        };
        let side = usize::from(me != k.0);
        if l.unlinked[side].is_none() {
            l.unlinked[side] = Some(mark);
        }
        self.figures.unlinks += 1;
        self.say(sim, || format!("n{n}: {local} unlinks {remote}"));
        sim.command(n, Command::Unlink { local, remote });
        self.observe(sim, n)
    }

    /// Process `id` of node `n` ends with `reason`.
    pub fn end(
        &mut self,
        sim: &mut Network,
        n: NodeId,
        id: u64,
        reason: ExitReason,
    ) -> Result<(), String> {
        self.say(sim, || format!("n{n}: {id} ends ({})", short(&reason)));
        sim.end_process(n, id, reason);
        self.observe(sim, n)
    }

    /// Live process `from` of node `n` sends an exit signal to `to`.
    pub fn exit(
        &mut self,
        sim: &mut Network,
        n: NodeId,
        from: u64,
        to: Pid,
        reason: ExitReason,
    ) -> Result<(), String> {
        let creation = sim.node(n).info.creation;
        let Some(k) = key_of(sim, &to) else {
            return Ok(());
        };
        if !self.live.contains(&(n, creation, from)) || k.0 == n {
            return Ok(());
        }
        let before = sim.engine(n).stats().signals_handed;
        sim.command(
            n,
            Command::Exit {
                from: Some(from),
                to,
                reason: reason.clone(),
            },
        );
        if sim.engine(n).stats().signals_handed > before {
            self.sent_exits.entry(k).or_default().push(reason);
        }
        self.observe(sim, n)
    }

    /// Node `n` asks whether `pid` is alive.
    pub fn is_alive(&mut self, sim: &mut Network, n: NodeId, pid: Pid) -> Result<(), String> {
        if !sim.node(n).alive {
            return Ok(());
        }
        let Some(k) = key_of(sim, &pid) else {
            return Ok(());
        };
        let target = k.0;
        let w = self.next_waiter;
        self.next_waiter += 1;
        self.queries.insert(
            w,
            Query {
                node: n,
                creation: sim.node(n).info.creation,
                target,
                pid: k,
                made_at: sim.now,
                answered: 0,
                void: false,
                exposed: self.is_cut(n, target),
            },
        );
        self.figures.queries += 1;
        sim.command(
            n,
            Command::IsAlive {
                pid,
                waiter: Waiter(w),
            },
        );
        self.observe(sim, n)
    }

    /// Node `v` is about to crash: its processes are lost, its monitors and queries void.
    pub fn crash(&mut self, sim: &mut Network, v: NodeId) -> Result<(), String> {
        if !sim.node(v).alive {
            return Ok(());
        }
        self.observe(sim, v)?;
        let creation = sim.node(v).info.creation;
        let now = sim.now;
        let lost: Vec<PKey> = self
            .live
            .range((v, creation, 0)..=(v, creation, u64::MAX))
            .copied()
            .collect();
        for k in lost {
            self.live.remove(&k);
            if let Some(p) = self.procs.get_mut(&k) {
                p.end = Some((now, End::Lost));
            }
        }
        for (k, m) in self
            .monitors
            .range_mut((v, creation, 0)..=(v, creation, u64::MAX))
        {
            debug_assert_eq!(k.0, v);
            m.void = true;
            m.open = false;
        }
        self.open_out[v as usize] = 0;
        for q in self.queries.values_mut() {
            if q.node == v {
                q.void = true;
            }
        }
        for &j in &self.interest[v as usize] {
            if let Some(p) = self.pairs.get_mut(&pair(v, j)) {
                p.breaks += 1;
                p.state = [None, None];
            }
        }
        self.say(sim, || format!("n{v} crashes"));
        sim.crash(v);
        self.seen[v as usize] = Seen {
            creation: creation + 1,
            answers: sim.node(v).answers.len(),
            ..Seen::default()
        };
        Ok(())
    }

    /// One random action, at the current time.
    pub fn act(&mut self, g: &mut ChaCha8Rng, sim: &mut Network) -> Result<(), String> {
        let live_nodes = sim.live();
        if live_nodes.is_empty() {
            return Ok(());
        }
        let pick_live = |g: &mut ChaCha8Rng, book: &ProcessBook| -> Option<PKey> {
            (!book.live.is_empty()).then(|| {
                *book
                    .live
                    .iter()
                    .nth(g.gen_range(0..book.live.len()))
                    .expect("nth")
            })
        };
        match g.gen_range(0..100) {
            0..=14 => {
                let n = live_nodes[g.gen_range(0..live_nodes.len())];
                let named = g.gen_bool(0.4).then(|| g.gen_range(0..NAMES.len()));
                self.spawn(sim, n, named);
                Ok(())
            }
            15..=44 => {
                let Some(w) = pick_live(g, self) else {
                    return Ok(());
                };
                match self.pick_target(g, sim, w.0, true) {
                    Some((_, target)) => self.monitor(sim, w.0, w.2, target),
                    None => Ok(()),
                }
            }
            45..=59 => {
                let Some(w) = pick_live(g, self) else {
                    return Ok(());
                };
                match self.pick_target(g, sim, w.0, false) {
                    Some((_, RemoteRef::Pid(p))) => self.link(sim, w.0, w.2, p),
                    _ => Ok(()),
                }
            }
            60..=67 => {
                let open: Vec<MKey> = self
                    .monitors
                    .iter()
                    .filter(|(_, m)| m.open && !m.void)
                    .map(|(k, _)| *k)
                    .collect();
                if open.is_empty() {
                    return Ok(());
                }
                let k = open[g.gen_range(0..open.len())];
                self.demonitor(sim, k)
            }
            68..=72 => {
                // Unlinked by the side that asked for the link, the other did not (see the
                // module documentation).
                let cands: Vec<(PKey, PKey)> = self
                    .links
                    .values()
                    .filter(|l| l.exits == [0, 0] && l.unlinked == [None, None])
                    .flat_map(|l| {
                        (0..2)
                            .filter(|&s| {
                                l.made_by[s] && !l.made_by[1 - s] && self.live.contains(&l.sides[s])
                            })
                            .map(|s| (l.sides[s], l.sides[1 - s]))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                if cands.is_empty() {
                    return Ok(());
                }
                let (me, other) = cands[g.gen_range(0..cands.len())];
                let remote = self.pid_of(sim, other);
                self.unlink(sim, me.0, me.2, remote)
            }
            73..=89 => {
                let Some(p) = pick_live(g, self) else {
                    return Ok(());
                };
                let reason = random_reason(g);
                self.end(sim, p.0, p.2, reason)
            }
            90..=94 => {
                let Some(w) = pick_live(g, self) else {
                    return Ok(());
                };
                let reason = match g.gen_range(0..4) {
                    0 => ExitReason::Kill,
                    1 => ExitReason::Normal,
                    _ => random_reason(g),
                };
                match self.pick_target(g, sim, w.0, false) {
                    Some((_, RemoteRef::Pid(p))) => self.exit(sim, w.0, w.2, p, reason),
                    _ => Ok(()),
                }
            }
            _ => {
                let n = live_nodes[g.gen_range(0..live_nodes.len())];
                match self.pick_target(g, sim, n, false) {
                    Some((_, RemoteRef::Pid(p))) => self.is_alive(sim, n, p),
                    _ => Ok(()),
                }
            }
        }
    }

    fn pid_of(&self, sim: &Network, k: PKey) -> Pid {
        Pid {
            node: sim.name_of(k.0).clone(),
            creation: k.1,
            id: k.2,
        }
    }

    /// A target for a process of node `n`: on another node, mostly one `n` is connected to;
    /// mostly a live process, sometimes one that ended or a process of an earlier
    /// incarnation; by name sometimes when `names`.
    fn pick_target(
        &self,
        g: &mut ChaCha8Rng,
        sim: &Network,
        n: NodeId,
        names: bool,
    ) -> Option<(NodeId, RemoteRef)> {
        let connected: Vec<NodeId> = sim
            .engine(n)
            .connected_peers()
            .filter_map(|p| sim.id_of(p))
            .collect();
        let j = if !connected.is_empty() && g.gen_bool(0.85) {
            connected[g.gen_range(0..connected.len())]
        } else {
            let j = g.gen_range(0..sim.len() as NodeId);
            if j == n {
                return None;
            }
            j
        };
        if names && g.gen_bool(0.3) {
            let name = ProcessName::new(NAMES[g.gen_range(0..NAMES.len())]).expect("valid");
            return Some((
                j,
                RemoteRef::Name(RegisteredName {
                    node: sim.name_of(j).clone(),
                    name,
                }),
            ));
        }
        let creation = sim.node(j).info.creation;
        let pool: Vec<PKey> = if g.gen_bool(0.9) {
            self.live
                .range((j, creation, 0)..=(j, creation, u64::MAX))
                .copied()
                .collect()
        } else {
            self.procs
                .range((j, 0, 0)..=(j, u64::MAX, u64::MAX))
                .map(|(k, _)| *k)
                .collect()
        };
        if pool.is_empty() {
            return None;
        }
        let k = pool[g.gen_range(0..pool.len())];
        Some((j, RemoteRef::Pid(self.pid_of(sim, k))))
    }

    /// Processes to end in one round of the final phase: every live one that watches nothing
    /// still owed a `Down` (so the monitors of the others fire while their watchers live);
    /// all of them when each watches something.
    pub fn ending_round(&self) -> Vec<PKey> {
        let waiting: BTreeSet<PKey> = self
            .monitors
            .values()
            .filter(|m| m.open && !m.void)
            .map(|m| m.watcher)
            .collect();
        let free: Vec<PKey> = self
            .live
            .iter()
            .filter(|k| !waiting.contains(k))
            .copied()
            .collect();
        if free.is_empty() {
            self.live.iter().copied().collect()
        } else {
            free
        }
    }
}
