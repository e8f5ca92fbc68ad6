//! What the book checks: after every event, what a node's processes received and its signal
//! table against the book (whether each `Down`, exit signal and answer was possible); once
//! the network settled, what is still owed.

use super::*;

impl ProcessBook {
    // ----- observation -----

    pub(super) fn proc_dead(&self, k: &PKey) -> bool {
        !self.live.contains(k)
    }

    /// Reads what node `n`'s processes received since last time and checks it, then checks
    /// `n`'s signal table. Call after every event that touched `n`, and after every action.
    pub fn observe(&mut self, sim: &Network, n: NodeId) -> Result<(), String> {
        let node = sim.node(n);
        if !node.alive {
            return Ok(());
        }
        let creation = node.info.creation;
        if self.seen[n as usize].creation != creation {
            self.seen[n as usize] = Seen {
                creation,
                answers: self.seen[n as usize].answers,
                ..Seen::default()
            };
        }
        let now = sim.now;
        let procs = &node.processes;
        let seen = self.seen[n as usize];
        // Ends first (a process an exit signal ended), then Downs and exit signals, each
        // placed by the end marks.
        let ended_now: BTreeSet<u64> = procs.ended[seen.ended..]
            .iter()
            .map(|(id, _)| *id)
            .collect();
        for (id, reason) in &procs.ended[seen.ended..] {
            self.say(sim, || format!("n{n}: {id} ended ({})", short(reason)));
            let k = (n, creation, *id);
            self.expose_ended(k);
            self.live.remove(&k);
            if let Some(p) = self.procs.get_mut(&k) {
                p.end = Some((now, End::Exited(reason.clone())));
            }
            for mk in self.by_watcher.get(&k).into_iter().flatten() {
                let m = self.monitors.get_mut(mk).expect("indexed");
                if m.open {
                    m.open = false;
                    self.open_out[n as usize] -= 1;
                }
            }
        }
        for (i, d) in procs.downs.iter().enumerate().skip(seen.downs) {
            self.say(sim, || format!("n{n}: Down {d:?}"));
            let mk = (n, creation, d.monitor);
            let Some(m) = self.monitors.get(&mk) else {
                return Err(format!(
                    "n{n}: a Down for monitor {} nobody made",
                    d.monitor
                ));
            };
            let ctx = format!(
                "n{n}: monitor {} by {} of {}",
                d.monitor, d.watcher, m.target
            );
            if d.watcher != m.watcher.2 || d.target != m.target {
                return Err(format!(
                    "{ctx}: Down for watcher {} about {}",
                    d.watcher, d.target
                ));
            }
            if !m.downs.is_empty() {
                return Err(format!(
                    "{ctx}: a second Down ({} after {})",
                    short(&d.reason),
                    short(&m.downs[0])
                ));
            }
            if m.demonitored.is_some_and(|mark| i >= mark) {
                return Err(format!(
                    "{ctx}: Down ({}) after the demonitor",
                    short(&d.reason)
                ));
            }
            // (One queued in the same step as the exit signal that ended the watcher left the
            // engine before it learned of the end: the runtime drops it with the mailbox.)
            if procs
                .end_marks
                .get(&d.watcher)
                .is_some_and(|(mark, _)| i >= *mark)
                && !ended_now.contains(&d.watcher)
            {
                return Err(format!(
                    "{ctx}: Down ({}) after its watcher ended",
                    short(&d.reason)
                ));
            }
            self.down_possible(sim, n, m, &d.reason)
                .map_err(|e| format!("{ctx}: Down {} impossible: {e}", short(&d.reason)))?;
            self.figures.downs += 1;
            match d.reason {
                ExitReason::NoConnection => self.figures.downs_noconnection += 1,
                ExitReason::NoProc => self.figures.downs_noproc += 1,
                _ => {}
            }
            let m = self.monitors.get_mut(&mk).expect("found");
            m.downs.push(d.reason.clone());
            if m.open {
                m.open = false;
                self.open_out[n as usize] -= 1;
            }
        }
        for (i, x) in procs.exits.iter().enumerate().skip(seen.exits) {
            self.say(sim, || {
                format!(
                    "n{n}: exit {} {:?} {} link {}",
                    x.to,
                    x.from,
                    short(&x.reason),
                    x.link
                )
            });
            let to = (n, creation, x.to);
            let from = x.from.as_ref().and_then(|p| key_of(sim, p));
            if !x.link {
                let sent = self.sent_exits.get_mut(&to);
                let pos = sent
                    .as_ref()
                    .and_then(|s| s.iter().position(|r| *r == x.reason));
                match (sent, pos) {
                    (Some(s), Some(p)) => {
                        s.remove(p);
                    }
                    _ => {
                        return Err(format!(
                            "n{n}: process {} got an exit signal ({}) nobody sent",
                            x.to,
                            short(&x.reason)
                        ))
                    }
                }
                self.figures.exits += 1;
                continue;
            }
            let Some(from) = from else {
                return Err(format!(
                    "n{n}: process {} got a link exit signal from no process",
                    x.to
                ));
            };
            let k = (to.min(from), to.max(from));
            let ctx = format!(
                "n{n}: link of {} with n{}:{}.{}",
                x.to, from.0, from.1, from.2
            );
            let Some(l) = self.links.get(&k) else {
                return Err(format!("{ctx}: exit signal for a link nobody made"));
            };
            let side = usize::from(to != k.0);
            if l.exits[side] > 0 {
                return Err(format!(
                    "{ctx}: a second exit signal ({})",
                    short(&x.reason)
                ));
            }
            if l.unlinked[side].is_some_and(|mark| i >= mark) {
                return Err(format!(
                    "{ctx}: exit signal ({}) after the unlink",
                    short(&x.reason)
                ));
            }
            // A process already gone gets one only from a peer's loss that fired several of
            // its links at once (the first ended it).
            if procs
                .end_marks
                .get(&x.to)
                .is_some_and(|(_, mark)| i >= *mark)
                && !(x.reason == ExitReason::NoConnection && ended_now.contains(&x.to))
            {
                return Err(format!(
                    "{ctx}: exit signal ({}) after the process ended",
                    short(&x.reason)
                ));
            }
            let then = l.sessions_at;
            self.exit_possible(sim, n, from, &x.reason, &then)
                .map_err(|e| format!("{ctx}: exit signal {} impossible: {e}", short(&x.reason)))?;
            self.figures.link_exits += 1;
            self.links.get_mut(&k).expect("found").exits[side] += 1;
        }
        for (w, a) in &node.answers[seen.answers.min(node.answers.len())..] {
            let (Some(q), Answer::Alive(alive)) = (self.queries.get(&w.0), a) else {
                continue;
            };
            if q.answered > 0 {
                return Err(format!("n{n}: liveness query {} answered twice", w.0));
            }
            // Alive: it lived after the question; dead: it was gone by now.
            let p = self.procs.get(&q.pid);
            let possible = match alive {
                Some(true) => {
                    p.is_some_and(|p| p.end.as_ref().is_none_or(|(t, _)| *t >= q.made_at))
                }
                Some(false) => self.proc_dead(&q.pid),
                None => true,
            };
            if !possible {
                return Err(format!(
                    "n{n}: liveness query {} of n{}:{}.{} answered {alive:?}",
                    w.0, q.pid.0, q.pid.1, q.pid.2
                ));
            }
            self.queries.get_mut(&w.0).expect("found").answered += 1;
        }
        let signalled: BTreeSet<u64> = procs.exits[seen.exits..]
            .iter()
            .filter(|x| !x.reason.is_normal())
            .map(|x| x.to)
            .collect();
        self.figures.killed_by_signal += ended_now.intersection(&signalled).count() as u32;
        self.seen[n as usize] = Seen {
            creation,
            downs: procs.downs.len(),
            exits: procs.exits.len(),
            ended: procs.ended.len(),
            answers: node.answers.len(),
        };
        // Connectivity of the pairs the book cares about.
        for &j in &self.interest[n as usize] {
            let st = peer_state(sim, n, j);
            let (x, y) = pair(n, j);
            let p = self.pairs.entry((x, y)).or_default();
            let slot = usize::from(n != x);
            if p.state[slot].is_some() && p.state[slot] != st {
                p.breaks += 1;
                p.lost[slot] += 1;
            }
            p.state[slot] = st;
        }
        self.check_counts(sim, n)
    }

    /// `n`'s signal table against the book.
    pub(super) fn check_counts(&self, sim: &Network, n: NodeId) -> Result<(), String> {
        let node = sim.node(n);
        if !node.alive {
            return Ok(());
        }
        let e = &node.engine;
        let c = e.signal_counts();
        if c == SignalCounts::default() {
            return Ok(());
        }
        if c.monitors_out != self.open_out[n as usize] {
            return Err(format!(
                "n{n}: holds {} monitors of peers' processes, the book {} ({c:?})",
                c.monitors_out, self.open_out[n as usize]
            ));
        }
        if node.processes.live_count() == 0 && (c.monitors_in > 0 || c.links > 0) {
            return Err(format!(
                "n{n}: no live process but {} monitors of its processes and {} links",
                c.monitors_in, c.links
            ));
        }
        for j in 0..sim.len() as NodeId {
            let name = sim.name_of(j);
            if j != n && !e.has_lane_to(name) && !e.signals_clear_of(name) {
                return Err(format!(
                    "n{n}: holds signal entries about n{j}, to which it has no lane ({c:?}; {})",
                    e.describe_peer(name)
                ));
            }
        }
        Ok(())
    }

    pub(super) fn down_possible(
        &self,
        sim: &Network,
        n: NodeId,
        m: &Mon,
        reason: &ExitReason,
    ) -> Result<(), String> {
        // The target's own exit reason (which may be `noconnection` or `noproc` too, from a
        // link that ended it).
        let ended_with = |k: &PKey| {
            self.procs
                .get(k)
                .and_then(|p| p.end.as_ref())
                .is_some_and(|(t, e)| *t >= m.issued && *e == End::Exited(reason.clone()))
        };
        let exited = match &m.watched {
            Watched::Pid(k) => ended_with(k),
            Watched::Name(j, name) => m.bound.is_some_and(|b| {
                self.names
                    .get(&(*j, b, name.clone()))
                    .into_iter()
                    .flatten()
                    .any(ended_with)
            }),
        };
        if exited {
            return Ok(());
        }
        let j = m.node();
        match reason {
            ExitReason::NoConnection => {
                let now = peer_state(sim, n, j);
                if m.bound.is_some() && now == m.bound && !session_broke(sim, n, j, &m.sessions_at)
                {
                    return Err(format!(
                        "n{n} is connected to n{j} (creation {:?}) as when the monitor was made, \
                         neither lost the other in between (sessions {:?} then, {:?} now), \
                         and no target ended with that reason",
                        m.bound,
                        m.sessions_at,
                        sessions(sim, n, j)
                    ));
                }
                Ok(())
            }
            ExitReason::NoProc => match &m.watched {
                Watched::Pid(k) => {
                    if Some(k.1) != m.bound || self.proc_dead(k) {
                        Ok(())
                    } else {
                        Err("the target is alive".into())
                    }
                }
                Watched::Name(j, name) => {
                    let Some(b) = m.bound else { return Ok(()) };
                    let holders = self.names.get(&(*j, b, name.clone()));
                    let held_at_issue = holders.into_iter().flatten().any(|h| {
                        let p = &self.procs[h];
                        p.born <= m.issued && p.end.as_ref().is_none_or(|(t, _)| *t > m.issued)
                    });
                    let ended_since = holders.into_iter().flatten().any(|h| {
                        self.procs[h]
                            .end
                            .as_ref()
                            .is_some_and(|(t, _)| *t >= m.issued)
                    });
                    if !held_at_issue || ended_since {
                        Ok(())
                    } else {
                        Err(format!("{name} was held all along"))
                    }
                }
            },
            _ => Err("no target ended with that reason since the monitor was made".into()),
        }
    }

    pub(super) fn exit_possible(
        &self,
        sim: &Network,
        n: NodeId,
        from: PKey,
        reason: &ExitReason,
        then: &Sessions,
    ) -> Result<(), String> {
        // The other side's own exit reason (which may be `noconnection` or `noproc` too).
        let exited = self
            .procs
            .get(&from)
            .and_then(|p| p.end.as_ref())
            .is_some_and(|(_, e)| *e == End::Exited(reason.clone()));
        if exited {
            return Ok(());
        }
        match reason {
            ExitReason::NoConnection => {
                if peer_state(sim, n, from.0) == Some(from.1)
                    && !session_broke(sim, n, from.0, then)
                {
                    Err(format!(
                        "n{n} is connected to n{} (creation {}), neither lost the other since \
                         the link was made (sessions {then:?} then, {:?} now), and the other \
                         side did not end with that reason",
                        from.0,
                        from.1,
                        sessions(sim, n, from.0)
                    ))
                } else {
                    Ok(())
                }
            }
            ExitReason::NoProc => {
                if self.proc_dead(&from) {
                    Ok(())
                } else {
                    Err("the other side is alive".into())
                }
            }
            _ => Err("the other side did not end with that reason".into()),
        }
    }

    // ----- settled checks -----

    /// What the network owes once settled (see the module documentation); `Ok` when paid.
    pub fn owed(&self, sim: &Network) -> Result<(), String> {
        for (k, m) in &self.monitors {
            if m.void || m.exposed || m.demonitored.is_some() || !self.live.contains(&m.watcher) {
                continue;
            }
            if !m.downs.is_empty() {
                continue;
            }
            let (n, _, id) = *k;
            let j = m.node();
            let cut = m.bound.is_none() || peer_state(sim, n, j) != m.bound;
            let gone = match &m.watched {
                Watched::Pid(t) => Some(t.1) != m.bound || self.proc_dead(t),
                Watched::Name(j, name) => m.bound.is_none_or(|b| {
                    !self
                        .names
                        .get(&(*j, b, name.clone()))
                        .into_iter()
                        .flatten()
                        .any(|h| self.live.contains(h))
                }),
            };
            if cut || gone {
                return Err(format!(
                    "n{n}: monitor {id} of {} (made at {:.3}s) got no Down ({}; {}; signal \
                     sessions then {:?}, now {:?})",
                    m.target,
                    m.issued.0 as f64 / 1e6,
                    if cut { "cut off" } else { "the target is gone" },
                    self.losses_since(n, j, &m.pair_at),
                    m.sessions_at,
                    sessions(sim, n, j)
                ));
            }
        }
        for l in self.links.values() {
            if l.exposed || l.unlinked.iter().any(Option::is_some) {
                continue;
            }
            for side in 0..2 {
                let (me, other) = (l.sides[side], l.sides[1 - side]);
                if !self.live.contains(&me) || !self.proc_dead(&other) || l.exits[side] > 0 {
                    continue;
                }
                // The side that did not ask may never have heard of the link if the
                // connection broke meanwhile (all its lanes, or one that carried the link, as
                // the engines' sessions tell): then it holds no entry of it.
                let holds = sim.node(me.0).alive
                    && sim
                        .engine(me.0)
                        .signal_holds_link(me.2, sim.name_of(other.0), other.2);
                if !l.made_by[side]
                    && !holds
                    && (l.refused[1 - side]
                        || self.pair_state(me.0, other.0).breaks > l.pair_at.breaks
                        || session_broke(sim, me.0, other.0, &l.sessions_at))
                {
                    continue;
                }
                return Err(format!(
                    "link of n{}:{}.{} with n{}:{}.{}: the first is alive, the second gone, and \
                     no exit signal came ({})",
                    me.0,
                    me.1,
                    me.2,
                    other.0,
                    other.1,
                    other.2,
                    self.losses_since(me.0, other.0, &l.pair_at)
                ));
            }
        }
        for (w, q) in &self.queries {
            if !q.void
                && !q.exposed
                && q.answered == 0
                && sim.node(q.node).info.creation == q.creation
            {
                return Err(format!("n{}: liveness query {w} not answered", q.node));
            }
        }
        Ok(())
    }

    /// Figures, with the count of exposed monitors and links.
    pub fn figures(&self) -> ProcessFigures {
        ProcessFigures {
            exposed: (self.monitors.values().filter(|m| m.exposed).count()
                + self.links.values().filter(|l| l.exposed).count()) as u32,
            ..self.figures
        }
    }

    /// Every live node's signal table empty (but for liveness queries a partition may have
    /// dropped the question or the answer of: they wait for the connection to go).
    pub fn tables_empty(&self, sim: &Network) -> Result<(), String> {
        for i in sim.live() {
            let c = sim.engine(i).signal_counts();
            let creation = sim.node(i).info.creation;
            let lost = self
                .queries
                .values()
                .filter(|q| q.node == i && q.creation == creation && q.exposed && q.answered == 0)
                .count();
            if c.monitors_out == 0 && c.monitors_in == 0 && c.links == 0 && c.queries <= lost {
                continue;
            }
            return Err(format!("n{i}: signal table not empty: {c:?}"));
        }
        Ok(())
    }
}
