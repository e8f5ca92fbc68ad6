//! The signal table by hand: two tables (nodes `a` and `b`) exchanging their messages, with
//! simulated local processes; named after the rules of the module documentation.

use super::*;
use crate::id::NodeName;
use crate::testing::SimProcesses;

struct Side {
    name: NodeName,
    creation: Creation,
    table: SignalTable,
    procs: SimProcesses,
}

struct Pair {
    a: Side,
    b: Side,
    /// Outputs not yet carried out, as (from a?, output).
    local: Vec<(bool, SignalOutput)>,
}

fn side(name: &str, creation: Creation) -> Side {
    Side {
        name: NodeName::new(name).unwrap(),
        creation,
        table: SignalTable::new(1000),
        procs: SimProcesses::default(),
    }
}

impl Pair {
    fn new() -> Pair {
        Pair {
            a: side("a@127.0.0.1", 1),
            b: side("b@127.0.0.1", 7),
            local: Vec::new(),
        }
    }

    fn pid(s: &Side, id: u64) -> Pid {
        Pid {
            node: s.name.clone(),
            creation: s.creation,
            id,
        }
    }

    /// Delivers every `Send` to the other table until none is left; keeps the local outputs.
    fn run(&mut self, from_a: bool, out: Vec<SignalOutput>) {
        let mut queue: Vec<(bool, SignalOutput)> = out.into_iter().map(|o| (from_a, o)).collect();
        while !queue.is_empty() {
            let (from_a, o) = queue.remove(0);
            match o {
                SignalOutput::Send { to, msg } => {
                    let (src, dst) = if from_a {
                        (&self.a, &mut self.b)
                    } else {
                        (&self.b, &mut self.a)
                    };
                    assert_eq!(to, dst.name);
                    let mut out = Vec::new();
                    let (peer, creation) = (src.name.clone(), src.creation);
                    dst.table
                        .handle(&peer, creation, msg, &mut dst.procs, &mut out);
                    queue.extend(out.into_iter().map(|o| (!from_a, o)));
                }
                other => self.local.push((from_a, other)),
            }
        }
    }

    fn downs(&self) -> Vec<(bool, u64, ExitReason)> {
        self.local
            .iter()
            .filter_map(|(a, o)| match o {
                SignalOutput::Down {
                    monitor, reason, ..
                } => Some((*a, *monitor, reason.clone())),
                _ => None,
            })
            .collect()
    }

    fn exits(&self) -> Vec<(bool, u64, ExitReason)> {
        self.local
            .iter()
            .filter_map(|(a, o)| match o {
                SignalOutput::Exit { to, reason, .. } => Some((*a, *to, reason.clone())),
                _ => None,
            })
            .collect()
    }

    fn empty(&self) -> bool {
        self.a.table.counts() == SignalCounts::default()
            && self.b.table.counts() == SignalCounts::default()
    }
}

#[test]
fn rule_1_monitor_of_an_unconnected_node_is_down_noconnection_at_once() {
    let mut p = Pair::new();
    let w = p.a.procs.spawn();
    let target = RemoteRef::Pid(Pair::pid(&p.b, 1));
    let mut out = Vec::new();
    p.a.table.monitor(w, 1, target, None, &mut out);
    p.run(true, out);
    assert_eq!(p.downs(), vec![(true, 1, ExitReason::NoConnection)]);
    assert!(p.empty());
}

#[test]
fn rule_1_monitor_of_a_pid_of_another_incarnation_is_down_noproc() {
    let mut p = Pair::new();
    let w = p.a.procs.spawn();
    let mut old = Pair::pid(&p.b, 1);
    old.creation -= 1;
    let mut out = Vec::new();
    p.a.table
        .monitor(w, 1, RemoteRef::Pid(old), Some(p.b.creation), &mut out);
    p.run(true, out);
    assert_eq!(p.downs(), vec![(true, 1, ExitReason::NoProc)]);
    assert!(p.empty());
}

#[test]
fn rule_2_monitor_of_a_missing_process_or_name_is_down_noproc() {
    let mut p = Pair::new();
    let w = p.a.procs.spawn();
    let mut out = Vec::new();
    p.a.table.monitor(
        w,
        1,
        RemoteRef::Pid(Pair::pid(&p.b, 99)),
        Some(p.b.creation),
        &mut out,
    );
    let name = crate::id::RegisteredName {
        node: p.b.name.clone(),
        name: crate::id::ProcessName::new("nobody").unwrap(),
    };
    p.a.table
        .monitor(w, 2, RemoteRef::Name(name), Some(p.b.creation), &mut out);
    p.run(true, out);
    assert_eq!(
        p.downs(),
        vec![(true, 1, ExitReason::NoProc), (true, 2, ExitReason::NoProc)]
    );
    assert!(p.empty());
}

#[test]
fn rule_3_exit_of_a_monitored_process_gives_one_down_with_its_reason() {
    let mut p = Pair::new();
    let w = p.a.procs.spawn();
    let t = p.b.procs.spawn();
    let name = crate::id::ProcessName::new("server").unwrap();
    assert!(p.b.procs.register(name.clone(), t));
    let mut out = Vec::new();
    let target = RemoteRef::Pid(Pair::pid(&p.b, t));
    p.a.table
        .monitor(w, 1, target, Some(p.b.creation), &mut out);
    let by_name = RemoteRef::Name(crate::id::RegisteredName {
        node: p.b.name.clone(),
        name,
    });
    p.a.table
        .monitor(w, 2, by_name, Some(p.b.creation), &mut out);
    p.run(true, out);
    assert_eq!(p.a.table.counts().monitors_out, 2);
    assert_eq!(p.b.table.counts().monitors_in, 2);
    assert!(p.downs().is_empty());
    let reason = ExitReason::error("é".repeat(MAX_REASON_LEN));
    let ExitReason::Error(text) = &reason else {
        unreachable!()
    };
    assert_eq!(text.len(), MAX_REASON_LEN, "long reasons are cut");
    let mut out = Vec::new();
    p.b.table.process_exited(t, &reason, &mut out);
    // A second report of the same end changes nothing.
    p.b.table.process_exited(t, &reason, &mut out);
    p.run(false, out);
    let downs = p.downs();
    assert_eq!(downs.len(), 2);
    assert!(downs[0] == (true, 1, reason.clone()) && downs[1] == (true, 2, reason));
    assert!(p.empty());
}

#[test]
fn rule_3_a_watcher_that_ends_withdraws_its_monitors() {
    let mut p = Pair::new();
    let w = p.a.procs.spawn();
    let t = p.b.procs.spawn();
    let mut out = Vec::new();
    p.a.table.monitor(
        w,
        1,
        RemoteRef::Pid(Pair::pid(&p.b, t)),
        Some(p.b.creation),
        &mut out,
    );
    p.run(true, out);
    let mut out = Vec::new();
    p.a.table.process_exited(w, &ExitReason::Normal, &mut out);
    p.run(true, out);
    assert!(p.empty());
    assert!(p.downs().is_empty());
}

#[test]
fn rule_4_peer_lost_fires_monitors_and_links_and_forgets_the_peers_entries() {
    let mut p = Pair::new();
    let w = p.a.procs.spawn();
    let t = p.b.procs.spawn();
    let mut out = Vec::new();
    p.a.table.monitor(
        w,
        1,
        RemoteRef::Pid(Pair::pid(&p.b, t)),
        Some(p.b.creation),
        &mut out,
    );
    p.a.table
        .link(w, Pair::pid(&p.b, t), Some(p.b.creation), &mut out);
    // b monitors a's process too.
    let mut out_b = Vec::new();
    p.b.table.monitor(
        t,
        5,
        RemoteRef::Pid(Pair::pid(&p.a, w)),
        Some(p.a.creation),
        &mut out_b,
    );
    p.run(true, out);
    p.run(false, out_b);
    assert_eq!(p.a.table.counts().links, 1);
    assert_eq!(p.b.table.counts().links, 1);
    let mut out = Vec::new();
    let b_name = p.b.name.clone();
    p.a.table.peer_lost(&b_name, None, &mut out);
    p.run(true, out);
    assert_eq!(p.downs(), vec![(true, 1, ExitReason::NoConnection)]);
    assert_eq!(p.exits(), vec![(true, w, ExitReason::NoConnection)]);
    assert!(p.a.table.is_clear_of(&b_name));
    assert_eq!(p.a.table.counts(), SignalCounts::default());
    let mut out = Vec::new();
    let a_name = p.a.name.clone();
    p.b.table.peer_lost(&a_name, None, &mut out);
    p.run(false, out);
    assert!(p.empty());
}

#[test]
fn rule_4_a_new_incarnation_fires_the_old_ones_entries_only() {
    let mut p = Pair::new();
    let w = p.a.procs.spawn();
    let t = p.b.procs.spawn();
    let mut out = Vec::new();
    p.a.table.monitor(
        w,
        1,
        RemoteRef::Pid(Pair::pid(&p.b, t)),
        Some(p.b.creation),
        &mut out,
    );
    p.run(true, out);
    let mut out = Vec::new();
    let b_name = p.b.name.clone();
    p.a.table.peer_lost(&b_name, Some(p.b.creation), &mut out);
    assert!(out.is_empty(), "the same incarnation keeps its entries");
    p.a.table
        .peer_lost(&b_name, Some(p.b.creation + 1), &mut out);
    p.run(true, out);
    assert_eq!(p.downs(), vec![(true, 1, ExitReason::NoConnection)]);
    assert_eq!(p.a.table.counts(), SignalCounts::default());
}

#[test]
fn rule_5_after_demonitor_no_down_and_both_tables_empty() {
    let mut p = Pair::new();
    let w = p.a.procs.spawn();
    let t = p.b.procs.spawn();
    let mut out = Vec::new();
    p.a.table.monitor(
        w,
        1,
        RemoteRef::Pid(Pair::pid(&p.b, t)),
        Some(p.b.creation),
        &mut out,
    );
    p.run(true, out);
    let mut out = Vec::new();
    assert!(p.a.table.demonitor(1, &mut out));
    assert!(
        !p.a.table.demonitor(1, &mut Vec::new()),
        "twice is harmless"
    );
    // The target ends while the demonitor is in flight: its Down is not delivered.
    let mut from_b = Vec::new();
    p.b.table
        .process_exited(t, &ExitReason::Killed, &mut from_b);
    p.run(false, from_b);
    p.run(true, out);
    assert!(p.downs().is_empty());
    assert!(p.empty());
    assert_eq!(p.a.table.stats().stale, 1, "b's Down after a's demonitor");
    assert_eq!(p.b.table.stats().stale, 1, "a's demonitor after b's Down");
}

#[test]
fn links_carry_abnormal_exits_both_ways_and_unlink_silences_them() {
    let mut p = Pair::new();
    let x = p.a.procs.spawn();
    let y = p.b.procs.spawn();
    let mut out = Vec::new();
    p.a.table
        .link(x, Pair::pid(&p.b, y), Some(p.b.creation), &mut out);
    p.run(true, out);
    let mut out = Vec::new();
    p.b.table
        .process_exited(y, &ExitReason::error("boom"), &mut out);
    p.run(false, out);
    assert_eq!(p.exits(), vec![(true, x, ExitReason::error("boom"))]);
    assert!(p.empty());

    // Linked again, then unlinked while an exit is in flight: it is not delivered.
    p.local.clear();
    let y2 = p.b.procs.spawn();
    let mut out = Vec::new();
    p.a.table
        .link(x, Pair::pid(&p.b, y2), Some(p.b.creation), &mut out);
    p.run(true, out);
    let mut unlink = Vec::new();
    p.a.table.unlink(x, &Pair::pid(&p.b, y2), &mut unlink);
    let mut exit = Vec::new();
    p.b.table
        .process_exited(y2, &ExitReason::error("late"), &mut exit);
    p.run(false, exit);
    p.run(true, unlink);
    assert!(p.exits().is_empty());
    assert!(p.empty());
}

#[test]
fn link_to_a_missing_process_is_an_exit_signal_noproc() {
    let mut p = Pair::new();
    let x = p.a.procs.spawn();
    let mut out = Vec::new();
    p.a.table
        .link(x, Pair::pid(&p.b, 42), Some(p.b.creation), &mut out);
    p.run(true, out);
    assert_eq!(p.exits(), vec![(true, x, ExitReason::NoProc)]);
    assert!(p.empty());
}

#[test]
fn explicit_exit_reaches_the_process_and_liveness_is_answered() {
    let mut p = Pair::new();
    let x = p.a.procs.spawn();
    let y = p.b.procs.spawn();
    let mut out = Vec::new();
    assert!(p.a.table.exit(
        Some(x),
        &Pair::pid(&p.b, y),
        ExitReason::Kill,
        Some(p.b.creation),
        &mut out
    ));
    assert!(!p.a.table.exit(
        Some(x),
        &Pair::pid(&p.b, y),
        ExitReason::Kill,
        None,
        &mut Vec::new()
    ));
    p.a.table
        .is_alive(&Pair::pid(&p.b, y), Waiter(1), Some(p.b.creation), &mut out);
    p.a.table.is_alive(
        &Pair::pid(&p.b, 77),
        Waiter(2),
        Some(p.b.creation),
        &mut out,
    );
    p.a.table
        .is_alive(&Pair::pid(&p.b, y), Waiter(3), None, &mut out);
    p.run(true, out);
    assert_eq!(p.exits(), vec![(false, y, ExitReason::Kill)]);
    let alive: Vec<(Waiter, Option<bool>)> = p
        .local
        .iter()
        .filter_map(|(_, o)| match o {
            SignalOutput::Alive { waiter, alive } => Some((*waiter, *alive)),
            _ => None,
        })
        .collect();
    assert_eq!(
        alive,
        vec![
            (Waiter(3), None),
            (Waiter(1), Some(true)),
            (Waiter(2), Some(false))
        ]
    );
    assert!(p.empty());
}

#[test]
fn a_full_table_refuses_with_noconnection_and_counts() {
    let mut p = Pair::new();
    p.a.table = SignalTable::new(1);
    let w = p.a.procs.spawn();
    let t = p.b.procs.spawn();
    let mut out = Vec::new();
    let target = RemoteRef::Pid(Pair::pid(&p.b, t));
    p.a.table
        .monitor(w, 1, target.clone(), Some(p.b.creation), &mut out);
    p.a.table
        .monitor(w, 2, target, Some(p.b.creation), &mut out);
    p.run(true, out);
    assert_eq!(p.downs(), vec![(true, 2, ExitReason::NoConnection)]);
    assert_eq!(p.a.table.stats().refused_full, 1);
}
