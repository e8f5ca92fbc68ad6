//! Supervisors: the three strategies, the three restart types, the intensity limit, ordered
//! shutdown, panicking children, start failures, supervisors in supervisors, the calls, and
//! empty monitor and link tables afterwards. Each test runs on loopback TCP (real threads and
//! time) and on the in-memory transport under a paused clock.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use partisan::{
    gen_server, gen_statem, ChildInfo, ChildSpec, ChildType, ExitReason, Node, Pid, Process,
    ReplyTo, Restart, SendOptions, Shutdown, Signal, Strategy, Supervisor, SupervisorError,
    REACHED_MAX_RESTART_INTENSITY,
};
use support::{eventually, node, tables_empty, Net, EVENTUALLY};

const WAIT: Duration = Duration::from_secs(20);

/// A worker: waits for messages; `crash` ends it with an error, `panic` panics, `normal` and
/// `shutdown` end it with those reasons.
async fn work(mut me: Process) -> ExitReason {
    while let Some(m) = me.recv().await {
        match &m.payload[..] {
            b"crash" => return ExitReason::error("crash"),
            b"panic" => panic!("deliberate panic"),
            b"normal" => return ExitReason::Normal,
            b"shutdown" => return ExitReason::Shutdown,
            _ => {}
        }
    }
    ExitReason::Normal
}

fn worker(id: &str) -> ChildSpec {
    ChildSpec::process(id, work)
}

type Log = Arc<Mutex<Vec<String>>>;

/// A worker that traps exits and, on the supervisor's `shutdown`, records its id in `log` and
/// ends; `crash` ends it with an error. It traps exits from before it can receive anything.
fn recording(id: &str, log: &Log) -> ChildSpec {
    let (name, log) = (id.to_string(), log.clone());
    ChildSpec::process(id, move |mut me: Process| {
        me.trap_exits(true);
        let (name, log) = (name.clone(), log.clone());
        async move {
            while let Some(m) = me.recv().await {
                match m.signal() {
                    Some(Signal::Exit(e)) if e.reason == ExitReason::Shutdown => {
                        log.lock().unwrap().push(name);
                        return ExitReason::Shutdown;
                    }
                    Some(_) => {}
                    None if &m.payload[..] == b"crash" => return ExitReason::error("crash"),
                    None => {}
                }
            }
            ExitReason::Normal
        }
    })
}

async fn send(n: &Node, to: &Pid, what: &'static str) {
    n.send(to, what, &SendOptions::default()).await.unwrap();
}

/// Polls the supervisor's children until `cond` holds for them; returns them.
async fn children_until(
    n: &Node,
    sup: &Pid,
    what: &str,
    mut cond: impl FnMut(&[ChildInfo]) -> bool,
) -> Vec<ChildInfo> {
    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    loop {
        let c = Supervisor::which_children(n, sup).await.unwrap();
        if cond(&c) {
            return c;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn pid_of(c: &[ChildInfo], id: &str) -> Option<Pid> {
    c.iter().find(|c| c.id == id).and_then(|c| c.pid.clone())
}

fn pids(c: &[ChildInfo]) -> Vec<Option<Pid>> {
    c.iter().map(|c| c.pid.clone()).collect()
}

fn ids(c: &[ChildInfo]) -> Vec<&str> {
    c.iter().map(|c| c.id.as_str()).collect()
}

/// The next `Down` in `w`'s mailbox: (target pid, reason).
async fn down(w: &mut Process) -> (Pid, ExitReason) {
    let env = w.recv_timeout(WAIT).await.expect("a Down in time");
    match env.signal() {
        Some(Signal::Down(d)) => match &d.target {
            partisan::RemoteRef::Pid(p) => (p.clone(), d.reason.clone()),
            other => panic!("Down of {other:?}"),
        },
        other => panic!("expected a Down, got {other:?} {:?}", env.payload),
    }
}

on_both_transports!(one_for_one_restarts_only_the_child_that_ended_including_a_panicking_one);
async fn one_for_one_restarts_only_the_child_that_ended_including_a_panicking_one(net: Net) {
    let a = node(&net, "oo").await;
    let sup = Supervisor::new(Strategy::OneForOne)
        .intensity(10, Duration::from_secs(60))
        .children([worker("a"), worker("b"), worker("c")])
        .start(&a)
        .unwrap();
    let before = Supervisor::which_children(&a, &sup).await.unwrap();
    assert_eq!(ids(&before), ["a", "b", "c"]);
    assert!(before
        .iter()
        .all(|c| c.pid.is_some() && !c.restarting && c.child_type == ChildType::Worker));
    let old_b = pid_of(&before, "b").unwrap();
    let mut w = a.process();
    w.monitor(&old_b).await;
    send(&a, &old_b, "crash").await;
    assert_eq!(
        down(&mut w).await,
        (old_b.clone(), ExitReason::error("crash"))
    );
    let after = children_until(&a, &sup, "b restarted", |c| {
        pid_of(c, "b").is_some_and(|p| p != old_b)
    })
    .await;
    assert_eq!(pid_of(&after, "a"), pid_of(&before, "a"));
    assert_eq!(pid_of(&after, "c"), pid_of(&before, "c"));
    // A panic is an abnormal end like any other.
    let b2 = pid_of(&after, "b").unwrap();
    w.monitor(&b2).await;
    send(&a, &b2, "panic").await;
    assert_eq!(
        down(&mut w).await,
        (b2.clone(), ExitReason::panic("deliberate panic"))
    );
    let again = children_until(&a, &sup, "b restarted after its panic", |c| {
        pid_of(c, "b").is_some_and(|p| p != b2)
    })
    .await;
    assert_eq!(pid_of(&again, "a"), pid_of(&before, "a"));
    assert!(a.is_alive(&pid_of(&again, "b").unwrap()).await.unwrap());
    Supervisor::stop(&a, &sup).await.unwrap();
    assert!(!a.is_alive(&sup).await.unwrap());
    drop(w);
    tables_empty(&a).await;
    a.shutdown().await;
}

on_both_transports!(one_for_all_stops_the_others_in_reverse_order_and_restarts_all);
async fn one_for_all_stops_the_others_in_reverse_order_and_restarts_all(net: Net) {
    let a = node(&net, "oa").await;
    let log = Log::default();
    let sup = Supervisor::new(Strategy::OneForAll)
        .intensity(10, Duration::from_secs(60))
        .children(["a", "b", "c", "d"].map(|id| recording(id, &log)))
        .start(&a)
        .unwrap();
    let before = Supervisor::which_children(&a, &sup).await.unwrap();
    send(&a, &pid_of(&before, "b").unwrap(), "crash").await;
    let after = children_until(&a, &sup, "all restarted", |c| {
        c.iter()
            .zip(&before)
            .all(|(n, o)| n.pid.is_some() && n.pid != o.pid)
    })
    .await;
    assert_eq!(ids(&after), ["a", "b", "c", "d"]);
    // The others were stopped last started first; b had crashed and was not stopped.
    assert_eq!(*log.lock().unwrap(), ["d", "c", "a"]);
    // A child stopped with terminate_child is started again by a one-for-all restart (as in
    // OTP); a temporary child is stopped and forgotten.
    Supervisor::terminate_child(&a, &sup, "c").await.unwrap();
    Supervisor::start_child(&a, &sup, recording("t", &log).restart(Restart::Temporary))
        .await
        .unwrap();
    log.lock().unwrap().clear();
    send(&a, &pid_of(&after, "a").unwrap(), "crash").await;
    let after = children_until(&a, &sup, "all restarted again", |c| {
        c.len() == 4
            && c.iter()
                .zip(&after)
                .all(|(n, o)| n.pid.is_some() && n.pid != o.pid)
    })
    .await;
    assert_eq!(ids(&after), ["a", "b", "c", "d"]);
    assert_eq!(*log.lock().unwrap(), ["t", "d", "b"]);
    log.lock().unwrap().clear();
    // Stopping the supervisor stops every child, last started first.
    Supervisor::stop(&a, &sup).await.unwrap();
    assert_eq!(*log.lock().unwrap(), ["d", "c", "b", "a"]);
    for p in pids(&after).into_iter().flatten() {
        assert!(!a.is_alive(&p).await.unwrap());
    }
    tables_empty(&a).await;
    a.shutdown().await;
}

on_both_transports!(rest_for_one_restarts_the_child_and_those_started_after_it);
async fn rest_for_one_restarts_the_child_and_those_started_after_it(net: Net) {
    let a = node(&net, "ro").await;
    let log = Log::default();
    let sup = Supervisor::new(Strategy::RestForOne)
        .intensity(10, Duration::from_secs(60))
        .children(["a", "b", "c", "d"].map(|id| recording(id, &log)))
        .start(&a)
        .unwrap();
    let before = Supervisor::which_children(&a, &sup).await.unwrap();
    send(&a, &pid_of(&before, "b").unwrap(), "crash").await;
    let after = children_until(&a, &sup, "b, c and d restarted", |c| {
        ["b", "c", "d"]
            .iter()
            .all(|id| pid_of(c, id).is_some() && pid_of(c, id) != pid_of(&before, id))
    })
    .await;
    assert_eq!(pid_of(&after, "a"), pid_of(&before, "a"));
    assert_eq!(*log.lock().unwrap(), ["d", "c"]);
    log.lock().unwrap().clear();
    // The last child's end restarts only itself.
    send(&a, &pid_of(&after, "d").unwrap(), "crash").await;
    let last = children_until(&a, &sup, "d restarted", |c| {
        pid_of(c, "d").is_some_and(|p| Some(p) != pid_of(&after, "d"))
    })
    .await;
    assert_eq!(pids(&last)[..3], pids(&after)[..3]);
    assert!(log.lock().unwrap().is_empty());
    Supervisor::stop(&a, &sup).await.unwrap();
    assert_eq!(*log.lock().unwrap(), ["d", "c", "b", "a"]);
    tables_empty(&a).await;
    a.shutdown().await;
}

on_both_transports!(permanent_transient_and_temporary_children);
async fn permanent_transient_and_temporary_children(net: Net) {
    let a = node(&net, "rt").await;
    let sup = Supervisor::new(Strategy::OneForOne)
        .intensity(10, Duration::from_secs(60))
        .children([
            worker("perm"),
            worker("trans").restart(Restart::Transient),
            worker("trans2").restart(Restart::Transient),
            worker("temp").restart(Restart::Temporary),
            worker("temp2").restart(Restart::Temporary),
        ])
        .start(&a)
        .unwrap();
    let c0 = Supervisor::which_children(&a, &sup).await.unwrap();
    let pid = |id| pid_of(&c0, id).unwrap();
    // Permanent: restarted even after a normal end.
    send(&a, &pid("perm"), "normal").await;
    // Transient: not restarted after `normal` or `shutdown`, kept (not running).
    send(&a, &pid("trans"), "normal").await;
    send(&a, &pid("trans2"), "shutdown").await;
    // Temporary: never restarted, even after a crash, and forgotten.
    send(&a, &pid("temp"), "crash").await;
    send(&a, &pid("temp2"), "normal").await;
    let c1 = children_until(&a, &sup, "the ends handled", |c| {
        c.len() == 3
            && pid_of(c, "perm").is_some_and(|p| p != pid("perm"))
            && pid_of(c, "trans").is_none()
            && pid_of(c, "trans2").is_none()
    })
    .await;
    assert_eq!(ids(&c1), ["perm", "trans", "trans2"]);
    assert!(c1.iter().all(|c| !c.restarting));
    let counts = Supervisor::count_children(&a, &sup).await.unwrap();
    assert_eq!(
        (
            counts.specs,
            counts.active,
            counts.workers,
            counts.supervisors
        ),
        (3, 1, 3, 0)
    );
    // A transient child is restarted after an abnormal end.
    let t = Supervisor::restart_child(&a, &sup, "trans").await.unwrap();
    send(&a, &t, "crash").await;
    let c2 = children_until(&a, &sup, "trans restarted after its crash", |c| {
        pid_of(c, "trans").is_some_and(|p| p != t)
    })
    .await;
    assert_eq!(pid_of(&c2, "perm"), pid_of(&c1, "perm"));
    Supervisor::stop(&a, &sup).await.unwrap();
    tables_empty(&a).await;
    a.shutdown().await;
}

on_both_transports!(more_restarts_than_the_intensity_end_the_supervisor_after_its_children);
async fn more_restarts_than_the_intensity_end_the_supervisor_after_its_children(net: Net) {
    let a = node(&net, "in").await;
    let log = Log::default();
    let sup = Supervisor::new(Strategy::OneForOne)
        .intensity(2, Duration::from_secs(3600))
        .children([recording("a", &log), worker("b"), recording("c", &log)])
        .start(&a)
        .unwrap();
    let mut w = a.process();
    w.monitor(&sup).await;
    let mut b = pid_of(&Supervisor::which_children(&a, &sup).await.unwrap(), "b").unwrap();
    // Two restarts are within the limit.
    for _ in 0..2 {
        send(&a, &b, "crash").await;
        let old = b.clone();
        let c = children_until(&a, &sup, "b restarted", |c| {
            pid_of(c, "b").is_some_and(|p| p != old)
        })
        .await;
        b = pid_of(&c, "b").unwrap();
    }
    // The third is one too many: the other children are shut down (last first), then the
    // supervisor ends with a reason that says why.
    send(&a, &b, "crash").await;
    let (who, reason) = down(&mut w).await;
    assert_eq!(
        (who, reason),
        (
            sup.clone(),
            ExitReason::error(REACHED_MAX_RESTART_INTENSITY)
        )
    );
    assert_eq!(*log.lock().unwrap(), ["c", "a"]);
    assert!(matches!(
        Supervisor::which_children(&a, &sup).await,
        Err(SupervisorError::NotAlive(ExitReason::NoProc))
    ));
    drop(w);
    tables_empty(&a).await;
    a.shutdown().await;
}

on_both_transports!(restarts_older_than_the_period_do_not_count);
async fn restarts_older_than_the_period_do_not_count(net: Net) {
    let a = node(&net, "pe").await;
    let period = Duration::from_millis(300);
    let sup = Supervisor::new(Strategy::OneForOne)
        .intensity(1, period)
        .child(worker("w"))
        .start(&a)
        .unwrap();
    let mut p = pid_of(&Supervisor::which_children(&a, &sup).await.unwrap(), "w").unwrap();
    for _ in 0..3 {
        // One restart per period is within an intensity of one: the period is what is being
        // tested, so this waits it out.
        tokio::time::sleep(period + Duration::from_millis(50)).await;
        send(&a, &p, "crash").await;
        let old = p.clone();
        let c = children_until(&a, &sup, "w restarted", |c| {
            pid_of(c, "w").is_some_and(|x| x != old)
        })
        .await;
        p = pid_of(&c, "w").unwrap();
    }
    assert!(a.is_alive(&sup).await.unwrap());
    Supervisor::stop(&a, &sup).await.unwrap();
    tables_empty(&a).await;
    a.shutdown().await;
}

on_both_transports!(
    shutdown_timeout_kills_a_child_that_does_not_stop_and_brutal_kill_kills_at_once
);
async fn shutdown_timeout_kills_a_child_that_does_not_stop_and_brutal_kill_kills_at_once(net: Net) {
    let a = node(&net, "sk").await;
    let got_shutdown = Log::default();
    // Traps exits and ignores them all: only a kill ends it.
    let stubborn = {
        let log = got_shutdown.clone();
        ChildSpec::process("stubborn", move |mut me: Process| {
            me.trap_exits(true);
            let log = log.clone();
            async move {
                while let Some(m) = me.recv().await {
                    if let Some(Signal::Exit(e)) = m.signal() {
                        log.lock().unwrap().push(format!("stubborn {}", e.reason));
                    }
                }
            }
        })
        .shutdown(Shutdown::Timeout(Duration::from_millis(200)))
    };
    // The defaults: 5 s for a worker, as long as it takes for a supervisor.
    assert_eq!(
        worker("w").shutdown_kind(),
        Shutdown::Timeout(Duration::from_secs(5))
    );
    assert_eq!(
        Supervisor::new(Strategy::OneForOne)
            .child_spec("s")
            .shutdown_kind(),
        Shutdown::Infinity
    );
    let log = Log::default();
    let brutal = recording("brutal", &log).shutdown(Shutdown::BrutalKill);
    let sup = Supervisor::new(Strategy::OneForOne)
        .children([
            stubborn,
            brutal,
            recording("patient", &log).shutdown(Shutdown::Infinity),
        ])
        .start(&a)
        .unwrap();
    let c = Supervisor::which_children(&a, &sup).await.unwrap();
    let mut w = a.process();
    for p in pids(&c).into_iter().flatten() {
        w.monitor(&p).await;
    }
    Supervisor::stop(&a, &sup).await.unwrap();
    let mut downs = Vec::new();
    for _ in 0..3 {
        downs.push(down(&mut w).await);
    }
    let expect = |id: &str, r: ExitReason| (pid_of(&c, id).unwrap(), r);
    assert_eq!(
        downs,
        [
            expect("patient", ExitReason::Shutdown),
            expect("brutal", ExitReason::Killed),
            expect("stubborn", ExitReason::Killed),
        ]
    );
    // The brutally killed child never saw a shutdown; the stubborn one did, and ignored it.
    assert_eq!(*log.lock().unwrap(), ["patient"]);
    assert_eq!(*got_shutdown.lock().unwrap(), ["stubborn shutdown"]);
    drop(w);
    tables_empty(&a).await;
    a.shutdown().await;
}

on_both_transports!(a_supervisor_in_a_supervisor_is_restarted_when_it_gives_up);
async fn a_supervisor_in_a_supervisor_is_restarted_when_it_gives_up(net: Net) {
    let a = node(&net, "ss").await;
    let log = Log::default();
    let inner = Supervisor::new(Strategy::OneForOne)
        .intensity(0, Duration::from_secs(3600))
        .name("inner")
        .child(recording("leaf", &log));
    let outer = Supervisor::new(Strategy::OneForOne)
        .intensity(5, Duration::from_secs(3600))
        .children([
            inner.child_spec("inner").restart(Restart::Transient),
            recording("sibling", &log),
        ])
        .start(&a)
        .unwrap();
    let c = Supervisor::which_children(&a, &outer).await.unwrap();
    assert_eq!(
        c.iter().map(|c| c.child_type).collect::<Vec<_>>(),
        [ChildType::Supervisor, ChildType::Worker]
    );
    let counts = Supervisor::count_children(&a, &outer).await.unwrap();
    assert_eq!((counts.supervisors, counts.workers), (1, 1));
    let inner_pid = pid_of(&c, "inner").unwrap();
    assert_eq!(a.whereis("inner"), Some(inner_pid.clone()));
    let inner_name = Node::name_on(a.name(), "inner").unwrap();
    let leaf = pid_of(
        &Supervisor::which_children(&a, &inner_name).await.unwrap(),
        "leaf",
    )
    .unwrap();
    // Intensity 0: the leaf's crash ends the inner supervisor, with an abnormal reason, so
    // the outer restarts it even though it is transient (registered again under its name,
    // with a new leaf).
    let mut w = a.process();
    w.monitor(&inner_pid).await;
    send(&a, &leaf, "crash").await;
    assert_eq!(
        down(&mut w).await,
        (
            inner_pid.clone(),
            ExitReason::error(REACHED_MAX_RESTART_INTENSITY)
        )
    );
    let c2 = children_until(&a, &outer, "inner restarted", |c| {
        pid_of(c, "inner").is_some_and(|p| p != inner_pid)
    })
    .await;
    assert_eq!(pid_of(&c2, "sibling"), pid_of(&c, "sibling"));
    let inner2 = pid_of(&c2, "inner").unwrap();
    assert_eq!(a.whereis("inner"), Some(inner2.clone()));
    let leaf2 = pid_of(
        &Supervisor::which_children(&a, &inner2).await.unwrap(),
        "leaf",
    )
    .unwrap();
    assert_ne!(leaf2, leaf);
    // Stopping the outer supervisor stops the sibling, then the inner one, which stops its
    // leaf before it ends.
    Supervisor::stop(&a, &outer).await.unwrap();
    assert_eq!(*log.lock().unwrap(), ["sibling", "leaf"]);
    assert!(!a.is_alive(&inner2).await.unwrap());
    drop(w);
    tables_empty(&a).await;
    a.shutdown().await;
}

on_both_transports!(terminate_restart_delete_and_start_child);
async fn terminate_restart_delete_and_start_child(net: Net) {
    let a = node(&net, "ca").await;
    let log = Log::default();
    let sup = Supervisor::new(Strategy::OneForOne)
        .children([
            recording("a", &log),
            worker("t").restart(Restart::Temporary),
        ])
        .start(&a)
        .unwrap();
    let c0 = Supervisor::which_children(&a, &sup).await.unwrap();
    let a0 = pid_of(&c0, "a").unwrap();
    // terminate_child: shut down (as its shutdown says) and kept, not running, not restarted.
    Supervisor::terminate_child(&a, &sup, "a").await.unwrap();
    assert_eq!(*log.lock().unwrap(), ["a"]);
    assert!(!a.is_alive(&a0).await.unwrap());
    let c1 = Supervisor::which_children(&a, &sup).await.unwrap();
    assert_eq!(ids(&c1), ["a", "t"]);
    assert_eq!(pid_of(&c1, "a"), None);
    // Terminating a child that is not running succeeds; an unknown id does not.
    Supervisor::terminate_child(&a, &sup, "a").await.unwrap();
    assert_eq!(
        Supervisor::terminate_child(&a, &sup, "nope").await,
        Err(SupervisorError::NotFound("nope".into()))
    );
    // restart_child: starts it again; a running child cannot be restarted or deleted.
    let a1 = Supervisor::restart_child(&a, &sup, "a").await.unwrap();
    assert_ne!(a1, a0);
    assert_eq!(
        Supervisor::restart_child(&a, &sup, "a").await,
        Err(SupervisorError::Running("a".into()))
    );
    assert_eq!(
        Supervisor::delete_child(&a, &sup, "a").await,
        Err(SupervisorError::Running("a".into()))
    );
    // A temporary child terminated is forgotten.
    Supervisor::terminate_child(&a, &sup, "t").await.unwrap();
    assert_eq!(
        ids(&Supervisor::which_children(&a, &sup).await.unwrap()),
        ["a"]
    );
    // start_child: appended and started; its id must be new.
    let b = Supervisor::start_child(&a, &sup, recording("b", &log))
        .await
        .unwrap();
    assert!(a.is_alive(&b).await.unwrap());
    assert_eq!(
        Supervisor::start_child(&a, &sup, worker("b")).await,
        Err(SupervisorError::AlreadyStarted {
            id: "b".into(),
            pid: b.clone()
        })
    );
    Supervisor::terminate_child(&a, &sup, "b").await.unwrap();
    assert_eq!(
        Supervisor::start_child(&a, &sup, worker("b")).await,
        Err(SupervisorError::AlreadyPresent("b".into()))
    );
    Supervisor::delete_child(&a, &sup, "b").await.unwrap();
    assert_eq!(
        Supervisor::delete_child(&a, &sup, "b").await,
        Err(SupervisorError::NotFound("b".into()))
    );
    // A start function that fails or panics: the error, and nothing kept.
    let failing = ChildSpec::worker("f", |_: &Process| Err::<Pid, _>("no resources"));
    assert_eq!(
        Supervisor::start_child(&a, &sup, failing).await,
        Err(SupervisorError::StartFailed {
            id: "f".into(),
            reason: "no resources".into()
        })
    );
    let panicking = ChildSpec::worker("p", |_: &Process| -> Result<Pid, String> {
        panic!("start panicked")
    });
    assert_eq!(
        Supervisor::start_child(&a, &sup, panicking).await,
        Err(SupervisorError::StartFailed {
            id: "p".into(),
            reason: "panic: start panicked".into()
        })
    );
    let c2 = Supervisor::which_children(&a, &sup).await.unwrap();
    assert_eq!(ids(&c2), ["a"]);
    assert_eq!(pid_of(&c2, "a"), Some(a1));
    let n = Supervisor::count_children(&a, &sup).await.unwrap();
    assert_eq!((n.specs, n.active), (1, 1));
    // restart_child does not count towards the intensity (here the default, 1 in 5 s): after
    // two more, a crash is still restarted.
    for _ in 0..2 {
        Supervisor::terminate_child(&a, &sup, "a").await.unwrap();
        Supervisor::restart_child(&a, &sup, "a").await.unwrap();
    }
    let before = pid_of(&Supervisor::which_children(&a, &sup).await.unwrap(), "a").unwrap();
    send(&a, &before, "crash").await;
    let c3 = children_until(&a, &sup, "a restarted", |c| {
        pid_of(c, "a").is_some_and(|p| p != before)
    })
    .await;
    assert!(a.is_alive(&pid_of(&c3, "a").unwrap()).await.unwrap());
    log.lock().unwrap().clear();
    Supervisor::stop(&a, &sup).await.unwrap();
    assert_eq!(*log.lock().unwrap(), ["a"]);
    // Calls to a supervisor that is gone say so.
    assert_eq!(
        Supervisor::count_children(&a, &sup).await,
        Err(SupervisorError::NotAlive(ExitReason::NoProc))
    );
    assert_eq!(
        Supervisor::stop(&a, &sup).await,
        Err(SupervisorError::NotAlive(ExitReason::NoProc))
    );
    tables_empty(&a).await;
    a.shutdown().await;
}

on_both_transports!(a_failed_start_stops_the_started_children_and_spares_the_parent);
async fn a_failed_start_stops_the_started_children_and_spares_the_parent(net: Net) {
    let a = node(&net, "fs").await;
    let log = Log::default();
    let parent = a.process();
    let res = Supervisor::new(Strategy::OneForOne)
        .name("doomed")
        .children([
            recording("a", &log),
            recording("b", &log),
            ChildSpec::worker("bad", |_: &Process| Err::<Pid, _>("refused")),
            recording("never", &log),
        ])
        .start_link(&parent);
    assert_eq!(
        res,
        Err(SupervisorError::StartFailed {
            id: "bad".into(),
            reason: "refused".into()
        })
    );
    {
        let log = log.clone();
        eventually("started children stopped, last first", move || {
            *log.lock().unwrap() == ["b", "a"]
        })
        .await;
    }
    let aa = a.clone();
    eventually("the name freed", move || aa.whereis("doomed").is_none()).await;
    // A start function that panics fails the start the same way.
    assert_eq!(
        Supervisor::new(Strategy::OneForOne)
            .child(ChildSpec::worker(
                "p",
                |_: &Process| -> Result<Pid, String> { panic!("no start") }
            ))
            .start_link(&parent),
        Err(SupervisorError::StartFailed {
            id: "p".into(),
            reason: "panic: no start".into()
        })
    );
    // Duplicate ids are refused before anything starts.
    assert_eq!(
        Supervisor::new(Strategy::OneForOne)
            .children([worker("x"), worker("x")])
            .start(&a),
        Err(SupervisorError::DuplicateChild("x".into()))
    );
    // A taken name.
    let holder = a.process_named("taken").unwrap();
    assert!(matches!(
        Supervisor::new(Strategy::OneForOne)
            .name("taken")
            .start_link(&parent),
        Err(SupervisorError::Name { .. })
    ));
    tables_empty(&a).await;
    // The parent got no exit signal and is alive.
    let mut parent = parent;
    assert!(parent.try_recv().is_none());
    assert!(a.is_alive(parent.pid()).await.unwrap());
    drop((parent, holder));
    a.shutdown().await;
}

on_both_transports!(the_parent_ending_or_an_exit_signal_stops_the_supervisor_after_its_children);
async fn the_parent_ending_or_an_exit_signal_stops_the_supervisor_after_its_children(net: Net) {
    let a = node(&net, "pa").await;
    let log = Log::default();
    let mut w = a.process();
    // A parent process that starts a supervisor linked with it, then ends with an error.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spec =
        Supervisor::new(Strategy::OneForOne).children([recording("a", &log), recording("b", &log)]);
    let parent = a.spawn(move |mut me: Process| async move {
        let sup = spec.start_link(&me).unwrap();
        let _ = tx.send(sup);
        me.recv().await;
        ExitReason::error("parent failed")
    });
    let sup = rx.await.unwrap();
    w.monitor(&sup).await;
    send(&a, &parent, "go").await;
    assert_eq!(
        down(&mut w).await,
        (sup.clone(), ExitReason::error("parent failed"))
    );
    assert_eq!(*log.lock().unwrap(), ["b", "a"]);
    log.lock().unwrap().clear();
    // An exit signal (not `normal`) from anyone stops an unlinked supervisor the same way.
    let sup = Supervisor::new(Strategy::OneForAll)
        .children([recording("a", &log), recording("b", &log)])
        .start(&a)
        .unwrap();
    w.monitor(&sup).await;
    a.exit(&sup, ExitReason::Normal).await.unwrap();
    assert!(a.is_alive(&sup).await.unwrap());
    a.exit(&sup, ExitReason::Shutdown).await.unwrap();
    assert_eq!(down(&mut w).await, (sup.clone(), ExitReason::Shutdown));
    assert_eq!(*log.lock().unwrap(), ["b", "a"]);
    drop(w);
    tables_empty(&a).await;
    a.shutdown().await;
}

on_both_transports!(calls_from_another_node_and_start_child_only_locally);
async fn calls_from_another_node_and_start_child_only_locally(net: Net) {
    let a = node(&net, "ra").await;
    let b = node(&net, "rb").await;
    a.join_and_wait(b.listen_addrs()[0], WAIT).await.unwrap();
    let (x, y) = (a.clone(), b.name().clone());
    eventually("b up at a", move || x.is_connected(&y)).await;
    let sup = Supervisor::new(Strategy::OneForOne)
        .name("remote_sup")
        .children([worker("a"), worker("b")])
        .start(&b)
        .unwrap();
    let by_name = Node::name_on(b.name(), "remote_sup").unwrap();
    let c = Supervisor::which_children(&a, &by_name).await.unwrap();
    assert_eq!(ids(&c), ["a", "b"]);
    assert_eq!(
        Supervisor::count_children(&a, &sup).await.unwrap().active,
        2
    );
    Supervisor::terminate_child(&a, &sup, "a").await.unwrap();
    assert_eq!(
        pid_of(&Supervisor::which_children(&a, &sup).await.unwrap(), "a"),
        None
    );
    let p = Supervisor::restart_child(&a, &by_name, "a").await.unwrap();
    assert_eq!(p.node, *b.name());
    assert_eq!(
        Supervisor::start_child(&a, &sup, worker("c")).await,
        Err(SupervisorError::NotLocal)
    );
    Supervisor::stop(&a, &by_name).await.unwrap();
    assert!(!b.is_alive(&sup).await.unwrap());
    tables_empty(&a).await;
    tables_empty(&b).await;
    a.shutdown().await;
    b.shutdown().await;
}

/// A worker whose start function fails on its calls numbered `fail_from..fail_until` (the
/// first call is 1); returns the spec and the call counter.
fn flaky_start(
    id: &str,
    fail_from: usize,
    fail_until: usize,
) -> (ChildSpec, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let spec = ChildSpec::worker(id, move |sup: &Process| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        if (fail_from..fail_until).contains(&n) {
            Err(format!("attempt {n} refused"))
        } else {
            Ok(sup.spawn_link(work))
        }
    });
    (spec, calls)
}

on_both_transports!(a_failed_restart_is_tried_again_and_each_try_counts);
async fn a_failed_restart_is_tried_again_and_each_try_counts(net: Net) {
    use std::sync::atomic::Ordering;
    let a = node(&net, "rf").await;
    // Restarts fail twice, then succeed: the child runs again.
    let (spec, calls) = flaky_start("w", 2, 4);
    let sup = Supervisor::new(Strategy::OneForOne)
        .intensity(5, Duration::from_secs(3600))
        .children([spec, worker("other")])
        .start(&a)
        .unwrap();
    let c0 = Supervisor::which_children(&a, &sup).await.unwrap();
    send(&a, &pid_of(&c0, "w").unwrap(), "crash").await;
    let c1 = children_until(&a, &sup, "w running again", |c| {
        pid_of(c, "w").is_some_and(|p| Some(p) != pid_of(&c0, "w")) && !c[0].restarting
    })
    .await;
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert_eq!(pid_of(&c1, "other"), pid_of(&c0, "other"));
    Supervisor::stop(&a, &sup).await.unwrap();

    // Restarts that keep failing: each try counts, and the intensity ends the supervisor.
    let (spec, calls) = flaky_start("w", 2, usize::MAX);
    let sup = Supervisor::new(Strategy::OneForAll)
        .intensity(3, Duration::from_secs(3600))
        .children([worker("first"), spec, worker("last")])
        .start(&a)
        .unwrap();
    let mut w = a.process();
    w.monitor(&sup).await;
    let c0 = Supervisor::which_children(&a, &sup).await.unwrap();
    for p in pids(&c0).into_iter().flatten() {
        w.monitor(&p).await;
    }
    send(&a, &pid_of(&c0, "w").unwrap(), "crash").await;
    let mut downs = Vec::new();
    loop {
        let (who, reason) = down(&mut w).await;
        let done = who == sup;
        downs.push((who, reason));
        if done {
            break;
        }
    }
    assert_eq!(
        downs,
        [
            (pid_of(&c0, "w").unwrap(), ExitReason::error("crash")),
            (pid_of(&c0, "last").unwrap(), ExitReason::Shutdown),
            (pid_of(&c0, "first").unwrap(), ExitReason::Shutdown),
            (
                sup.clone(),
                ExitReason::error(REACHED_MAX_RESTART_INTENSITY)
            ),
        ]
    );
    // The first start, then three restarts (each failing at "w"); the fourth was one too many.
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    drop(w);
    tables_empty(&a).await;
    a.shutdown().await;
}

on_both_transports!(a_child_its_start_function_did_not_link_is_still_watched);
async fn a_child_its_start_function_did_not_link_is_still_watched(net: Net) {
    let a = node(&net, "ul").await;
    // The start function spawns without a link: the supervisor links with the pid itself.
    let sup = Supervisor::new(Strategy::OneForOne)
        .child(ChildSpec::worker("w", |sup: &Process| {
            Ok::<_, String>(sup.node().spawn(work))
        }))
        .start(&a)
        .unwrap();
    let w0 = children_until(&a, &sup, "w linked", |_| true).await;
    let w0 = pid_of(&w0, "w").unwrap();
    send(&a, &w0, "crash").await;
    let c = children_until(&a, &sup, "w restarted", |c| {
        pid_of(c, "w").is_some_and(|p| p != w0)
    })
    .await;
    let w1 = pid_of(&c, "w").unwrap();
    Supervisor::stop(&a, &sup).await.unwrap();
    assert!(!a.is_alive(&w1).await.unwrap());
    tables_empty(&a).await;
    a.shutdown().await;
}

on_both_transports!(the_default_intensity_is_one_restart_in_five_seconds);
async fn the_default_intensity_is_one_restart_in_five_seconds(net: Net) {
    let a = node(&net, "di").await;
    let sup = Supervisor::new(Strategy::OneForOne)
        .child(worker("w"))
        .start(&a)
        .unwrap();
    let mut w = a.process();
    w.monitor(&sup).await;
    let p0 = pid_of(&Supervisor::which_children(&a, &sup).await.unwrap(), "w").unwrap();
    send(&a, &p0, "crash").await;
    let c = children_until(&a, &sup, "w restarted", |c| {
        pid_of(c, "w").is_some_and(|p| p != p0)
    })
    .await;
    send(&a, &pid_of(&c, "w").unwrap(), "crash").await;
    assert_eq!(
        down(&mut w).await,
        (
            sup.clone(),
            ExitReason::error(REACHED_MAX_RESTART_INTENSITY)
        )
    );
    drop(w);
    tables_empty(&a).await;
    a.shutdown().await;
}

/// A GenServer child: adds to a counter; `Crash` stops it with an error. It traps exits, so
/// its supervisor's shutdown runs its `terminate`, which logs the reason.
struct Counter {
    n: u64,
    log: Log,
}

#[derive(serde::Serialize, serde::Deserialize)]
enum CounterReq {
    Add(u64),
    Crash,
}

impl gen_server::GenServer for Counter {
    type Call = CounterReq;
    type Reply = u64;
    type Cast = ();

    async fn init(&mut self, me: &mut Process) -> Result<(), ExitReason> {
        me.trap_exits(true);
        Ok(())
    }

    async fn handle_call(
        &mut self,
        req: CounterReq,
        _from: ReplyTo<u64>,
        _me: &mut Process,
    ) -> gen_server::CallResponse<u64> {
        match req {
            CounterReq::Add(k) => {
                self.n += k;
                gen_server::CallResponse::Reply(self.n)
            }
            CounterReq::Crash => gen_server::CallResponse::Stop {
                reason: ExitReason::error("counter crashed"),
                reply: None,
            },
        }
    }

    async fn terminate(&mut self, reason: &ExitReason, _me: &mut Process) {
        self.log.lock().unwrap().push(format!("counter {reason}"));
    }
}

/// A GenStatem child: a door, locked until unlocked; `Crash` stops it with an error.
struct Door {
    log: Log,
}

#[derive(Clone, Debug, PartialEq)]
enum DoorState {
    Locked,
    Open,
}

#[derive(serde::Serialize, serde::Deserialize)]
enum DoorReq {
    Unlock,
    State,
    Crash,
}

impl gen_statem::GenStatem for Door {
    type State = DoorState;
    type Call = DoorReq;
    type Reply = String;
    type Cast = ();
    type Internal = ();

    async fn init(
        &mut self,
        me: &mut Process,
    ) -> Result<(DoorState, Vec<gen_statem::Action<Self>>), ExitReason> {
        me.trap_exits(true);
        Ok((DoorState::Locked, Vec::new()))
    }

    async fn handle_event(
        &mut self,
        state: &DoorState,
        event: &gen_statem::Event<Self>,
        _me: &mut Process,
    ) -> gen_statem::Transition<Self> {
        use gen_statem::{Event, Transition};
        match event {
            Event::Call {
                request: DoorReq::Unlock,
                from,
            } => Transition::to(DoorState::Open).reply(from, "open".into()),
            Event::Call {
                request: DoorReq::State,
                from,
            } => Transition::keep().reply(from, format!("{state:?}")),
            Event::Call {
                request: DoorReq::Crash,
                ..
            } => Transition::stop(ExitReason::error("door crashed")),
            _ => Transition::keep(),
        }
    }

    async fn terminate(&mut self, reason: &ExitReason, _state: &DoorState, _me: &mut Process) {
        self.log.lock().unwrap().push(format!("door {reason}"));
    }
}

on_both_transports!(genserver_genstatem_and_plain_children_under_one_supervisor);
async fn genserver_genstatem_and_plain_children_under_one_supervisor(net: Net) {
    let a = node(&net, "gs").await;
    let log = Log::default();
    let (l1, l2) = (log.clone(), log.clone());
    let sup = Supervisor::new(Strategy::OneForOne)
        .intensity(5, Duration::from_secs(3600))
        .children([
            ChildSpec::worker("counter", move |sup: &Process| {
                gen_server::start_link_named(
                    sup,
                    "counter",
                    Counter {
                        n: 0,
                        log: l1.clone(),
                    },
                )
            }),
            ChildSpec::worker("door", move |sup: &Process| {
                gen_statem::start_link_named(sup, "door", Door { log: l2.clone() })
            }),
            recording("plain", &log),
        ])
        .start(&a)
        .unwrap();
    let counter = Node::name_on(a.name(), "counter").unwrap();
    let door = Node::name_on(a.name(), "door").unwrap();
    let call_counter = |req| {
        let (a, counter) = (a.clone(), counter.clone());
        async move { gen_server::call::<u64, _, _, _>(&a, &counter, &req, WAIT).await }
    };
    let call_door = |req| {
        let (a, door) = (a.clone(), door.clone());
        async move { gen_statem::call::<String, _, _, _>(&a, &door, &req, WAIT).await }
    };
    assert_eq!(call_counter(CounterReq::Add(2)).await.unwrap(), 2);
    assert_eq!(call_counter(CounterReq::Add(3)).await.unwrap(), 5);
    assert_eq!(call_door(DoorReq::Unlock).await.unwrap(), "open");
    assert_eq!(call_door(DoorReq::State).await.unwrap(), "Open");
    let c0 = Supervisor::which_children(&a, &sup).await.unwrap();

    // Both behaviours stop with an error; each is restarted, with its initial state.
    assert!(call_counter(CounterReq::Crash).await.is_err());
    assert!(call_door(DoorReq::Crash).await.is_err());
    let c1 = children_until(&a, &sup, "counter and door restarted", |c| {
        ["counter", "door"]
            .iter()
            .all(|id| pid_of(c, id).is_some() && pid_of(c, id) != pid_of(&c0, id))
    })
    .await;
    assert_eq!(pid_of(&c1, "plain"), pid_of(&c0, "plain"));
    assert_eq!(call_counter(CounterReq::Add(1)).await.unwrap(), 1);
    assert_eq!(call_door(DoorReq::State).await.unwrap(), "Locked");
    assert_eq!(
        *log.lock().unwrap(),
        ["counter counter crashed", "door door crashed"]
    );
    log.lock().unwrap().clear();

    // Stopping the supervisor shuts them down last first; the behaviours' terminate runs.
    Supervisor::stop(&a, &sup).await.unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        ["plain", "door shutdown", "counter shutdown"]
    );
    tables_empty(&a).await;
    a.shutdown().await;
}
