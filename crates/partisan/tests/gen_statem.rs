//! GenStatem: state, event and named timeouts, postpone order, next events, state enter
//! calls, calls and casts across nodes. Each test runs over loopback TCP and over the
//! in-memory transport with a paused clock, and ends with every monitor and link table empty.

mod support;

use std::time::Duration;

use partisan::gen_statem::{self, Action, Event, GenStatem, Transition};
use partisan::{CallError, ExitReason, Node, Process, ServerStartError, Signal};
use serde::{Deserialize, Serialize};
use support::{node, pair, tables_empty, Net};
use tokio::sync::mpsc;
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum St {
    Locked,
    Open,
    Closed,
}

/// What timeouts and internal events carry: a label to log, or a state to go to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Tick {
    Log(String),
    GoTo(St),
}

/// Casts: each tells the machine what to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Cmd {
    Go(St),
    /// An event that does nothing (but cancels the event timeout).
    Poke,
    /// `Transition::to` the current state: not a state change.
    SameState,
    StateTimeout(u64, Tick),
    CancelStateTimeout,
    EventTimeout(u64, Tick),
    /// Sleeps this many ms, then arms the event timeout.
    SlowEventTimeout(u64, u64, Tick),
    Timer(String, u64, Tick),
    CancelTimer(String),
    /// Postponed while `Closed`, logged otherwise.
    Item(u32),
    /// Goes to the state and inserts these internal events.
    GoAndInsert(St, Vec<String>),
    /// Inserts these internal events, and a cast `Item` after them (postponed while
    /// `Closed`).
    Burst(Vec<String>, u32),
    /// The next enter call will try to change the state.
    BadEnter,
}

#[derive(Debug, Serialize, Deserialize)]
enum Query {
    State,
    Log,
    /// Postponed while `Closed`, answered with the state otherwise.
    WhenNotClosed,
    /// Stops with `Error(text)` after replying.
    StopWith(String),
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Answer {
    State(St),
    Log(Vec<String>),
    Stopping,
}

/// A machine that logs what happens to it (in its data, and on `events` with the time).
struct Machine {
    initial: St,
    /// Entering `Open` arms a state timeout of this many ms back to `Locked`.
    open_for: Option<u64>,
    bad_enter: bool,
    fail_init: bool,
    log: Vec<String>,
    events: mpsc::UnboundedSender<(Instant, String)>,
}

fn machine(initial: St) -> (Machine, mpsc::UnboundedReceiver<(Instant, String)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        Machine {
            initial,
            open_for: None,
            bad_enter: false,
            fail_init: false,
            log: Vec::new(),
            events: tx,
        },
        rx,
    )
}

impl Machine {
    fn note(&mut self, line: String) {
        let _ = self.events.send((Instant::now(), line.clone()));
        self.log.push(line);
    }

    fn tick(&mut self, kind: &str, tick: &Tick, state: &St) -> Transition<Self> {
        match tick {
            Tick::Log(label) => {
                self.note(format!("{kind} {label} in {state:?}"));
                Transition::keep()
            }
            Tick::GoTo(s) => {
                self.note(format!("{kind} to {s:?} in {state:?}"));
                Transition::to(*s)
            }
        }
    }
}

impl GenStatem for Machine {
    type State = St;
    type Call = Query;
    type Reply = Answer;
    type Cast = Cmd;
    type Internal = Tick;

    async fn init(&mut self, _me: &mut Process) -> Result<(St, Vec<Action<Self>>), ExitReason> {
        if self.fail_init {
            return Err(ExitReason::error("cannot start"));
        }
        Ok((self.initial, vec![]))
    }

    async fn handle_event(
        &mut self,
        state: &St,
        event: &Event<Self>,
        _me: &mut Process,
    ) -> Transition<Self> {
        match event {
            Event::Call { request, from } => match request {
                Query::State => Transition::keep().reply(from, Answer::State(*state)),
                Query::Log => Transition::keep().reply(from, Answer::Log(self.log.clone())),
                Query::WhenNotClosed if *state == St::Closed => Transition::keep().postpone(),
                Query::WhenNotClosed => Transition::keep().reply(from, Answer::State(*state)),
                Query::StopWith(text) => {
                    Transition::stop(ExitReason::error(text.clone())).reply(from, Answer::Stopping)
                }
            },
            Event::Cast(cmd) => match cmd {
                Cmd::Go(s) => Transition::to(*s),
                Cmd::Poke => {
                    self.note(format!("poke in {state:?}"));
                    Transition::keep()
                }
                Cmd::SameState => Transition::to(*state),
                Cmd::StateTimeout(ms, t) => {
                    Transition::keep().state_timeout(Duration::from_millis(*ms), t.clone())
                }
                Cmd::CancelStateTimeout => Transition::keep().cancel_state_timeout(),
                Cmd::EventTimeout(ms, t) => {
                    Transition::keep().event_timeout(Duration::from_millis(*ms), t.clone())
                }
                Cmd::SlowEventTimeout(sleep, ms, t) => {
                    tokio::time::sleep(Duration::from_millis(*sleep)).await;
                    Transition::keep().event_timeout(Duration::from_millis(*ms), t.clone())
                }
                Cmd::Timer(name, ms, t) => {
                    Transition::keep().timeout(name.clone(), Duration::from_millis(*ms), t.clone())
                }
                Cmd::CancelTimer(name) => Transition::keep().cancel_timeout(name.clone()),
                Cmd::Item(n) if *state == St::Closed => {
                    self.note(format!("postpone {n}"));
                    Transition::keep().postpone()
                }
                Cmd::Item(n) => {
                    self.note(format!("item {n} in {state:?}"));
                    Transition::keep()
                }
                Cmd::GoAndInsert(s, labels) => labels.iter().fold(Transition::to(*s), |t, l| {
                    t.next_event(Event::Internal(Tick::Log(l.clone())))
                }),
                Cmd::Burst(..) if *state == St::Closed => {
                    self.note("postpone burst".into());
                    Transition::keep().postpone()
                }
                Cmd::Burst(labels, n) => labels
                    .iter()
                    .fold(Transition::keep(), |t, l| {
                        t.next_event(Event::Internal(Tick::Log(l.clone())))
                    })
                    .next_event(Event::Cast(Cmd::Item(*n))),
                Cmd::BadEnter => {
                    self.bad_enter = true;
                    Transition::keep()
                }
            },
            Event::Info(env) => {
                self.note(format!("info {:?}", env.payload));
                Transition::keep()
            }
            Event::Internal(t) => self.tick("internal", t, state),
            Event::StateTimeout(t) => self.tick("state_timeout", t, state),
            Event::EventTimeout(t) => self.tick("event_timeout", t, state),
            Event::Timeout { name, content } => {
                self.tick(&format!("timeout {name}"), content, state)
            }
        }
    }

    async fn enter(&mut self, old: &St, state: &St, _me: &mut Process) -> Transition<Self> {
        self.note(format!("enter {old:?}->{state:?}"));
        if self.bad_enter {
            return Transition::to(St::Locked);
        }
        match (state, self.open_for) {
            (St::Open, Some(ms)) => {
                Transition::keep().state_timeout(Duration::from_millis(ms), Tick::GoTo(St::Locked))
            }
            _ => Transition::keep(),
        }
    }

    async fn terminate(&mut self, reason: &ExitReason, state: &St, _me: &mut Process) {
        self.note(format!("terminate {reason} in {state:?}"));
    }
}

type Events = mpsc::UnboundedReceiver<(Instant, String)>;

/// The next logged line is `what`; when it was logged.
async fn expect(events: &mut Events, what: &str) -> Instant {
    let (at, got) = tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("an event in time")
        .expect("events open");
    assert_eq!(got, what);
    at
}

/// Nothing is logged for `d`.
async fn quiet(events: &mut Events, d: Duration) {
    if let Ok(Some((_, got))) = tokio::time::timeout(d, events.recv()).await {
        panic!("unexpected event: {got}");
    }
}

async fn cast(from: &Node, to: &partisan::Pid, cmd: Cmd) {
    gen_statem::cast(from, to, &cmd).await.unwrap();
}

async fn log(from: &Node, to: &partisan::Pid) -> Vec<String> {
    match gen_statem::call(from, to, &Query::Log, WAIT).await.unwrap() {
        Answer::Log(l) => l,
        other => panic!("expected the log, got {other:?}"),
    }
}

on_both_transports!(state_timeouts_fire_and_a_state_change_cancels_them);
async fn state_timeouts_fire_and_a_state_change_cancels_them(net: Net) {
    let a = node(&net, "st").await;
    let (mut m, mut ev) = machine(St::Locked);
    m.open_for = Some(100);
    let pid = gen_statem::start(&a, m).await.unwrap();
    expect(&mut ev, "enter Locked->Locked").await;
    // Open arms a 100 ms state timeout (in its enter call) that relocks.
    cast(&a, &pid, Cmd::Go(St::Open)).await;
    let opened = expect(&mut ev, "enter Locked->Open").await;
    expect(&mut ev, "state_timeout to Locked in Open").await;
    let relocked = expect(&mut ev, "enter Open->Locked").await;
    assert!(relocked - opened >= Duration::from_millis(100));
    // A transition to the same state is no state change: the timeout stays armed.
    cast(&a, &pid, Cmd::Go(St::Open)).await;
    expect(&mut ev, "enter Locked->Open").await;
    cast(&a, &pid, Cmd::SameState).await;
    expect(&mut ev, "state_timeout to Locked in Open").await;
    expect(&mut ev, "enter Open->Locked").await;
    // Leaving the state first cancels it.
    cast(&a, &pid, Cmd::Go(St::Open)).await;
    expect(&mut ev, "enter Locked->Open").await;
    cast(&a, &pid, Cmd::Go(St::Closed)).await;
    expect(&mut ev, "enter Open->Closed").await;
    quiet(&mut ev, Duration::from_millis(300)).await;
    // Setting it again replaces it; cancelling it cancels it.
    cast(&a, &pid, Cmd::StateTimeout(100, Tick::Log("first".into()))).await;
    let set = Instant::now();
    cast(&a, &pid, Cmd::StateTimeout(200, Tick::Log("second".into()))).await;
    let fired = expect(&mut ev, "state_timeout second in Closed").await;
    assert!(fired - set >= Duration::from_millis(200));
    cast(
        &a,
        &pid,
        Cmd::StateTimeout(50, Tick::Log("cancelled".into())),
    )
    .await;
    cast(&a, &pid, Cmd::CancelStateTimeout).await;
    quiet(&mut ev, Duration::from_millis(200)).await;
    gen_statem::stop(&a, &pid, ExitReason::Normal, WAIT)
        .await
        .unwrap();
    expect(&mut ev, "terminate normal in Closed").await;
    tables_empty(&a).await;
    a.shutdown().await;
}

on_both_transports!(event_timeouts_fire_only_without_an_event_first);
async fn event_timeouts_fire_only_without_an_event_first(net: Net) {
    let a = node(&net, "et").await;
    let (m, mut ev) = machine(St::Locked);
    let pid = gen_statem::start(&a, m).await.unwrap();
    expect(&mut ev, "enter Locked->Locked").await;
    let set = Instant::now();
    cast(&a, &pid, Cmd::EventTimeout(100, Tick::Log("idle".into()))).await;
    let fired = expect(&mut ev, "event_timeout idle in Locked").await;
    assert!(fired - set >= Duration::from_millis(100));
    // Any event cancels it: a cast, a call.
    cast(&a, &pid, Cmd::EventTimeout(100, Tick::Log("never".into()))).await;
    cast(&a, &pid, Cmd::Poke).await;
    expect(&mut ev, "poke in Locked").await;
    quiet(&mut ev, Duration::from_millis(300)).await;
    cast(&a, &pid, Cmd::EventTimeout(100, Tick::Log("never".into()))).await;
    let state: Result<_, _> = gen_statem::call(&a, &pid, &Query::State, WAIT).await;
    assert_eq!(state, Ok(Answer::State(St::Locked)));
    quiet(&mut ev, Duration::from_millis(300)).await;
    // An event already waiting when it comes due cancels it too: the Poke arrives while the
    // machine sleeps, before a zero event timeout is armed.
    let from = a.process();
    gen_statem::cast(
        &from,
        &pid,
        &Cmd::SlowEventTimeout(100, 0, Tick::Log("never".into())),
    )
    .await
    .unwrap();
    gen_statem::cast(&from, &pid, &Cmd::Poke).await.unwrap();
    expect(&mut ev, "poke in Locked").await;
    quiet(&mut ev, Duration::from_millis(300)).await;
    drop(from);
    // An event timeout can change the state.
    cast(&a, &pid, Cmd::EventTimeout(50, Tick::GoTo(St::Open))).await;
    expect(&mut ev, "event_timeout to Open in Locked").await;
    expect(&mut ev, "enter Locked->Open").await;
    a.exit(&pid, ExitReason::Kill).await.unwrap();
    tables_empty(&a).await;
    a.shutdown().await;
}

on_both_transports!(named_timeouts_survive_events_and_state_changes_and_cancel_by_name);
async fn named_timeouts_survive_events_and_state_changes_and_cancel_by_name(net: Net) {
    let a = node(&net, "gt").await;
    let (m, mut ev) = machine(St::Locked);
    let pid = gen_statem::start(&a, m).await.unwrap();
    expect(&mut ev, "enter Locked->Locked").await;
    let set = Instant::now();
    cast(
        &a,
        &pid,
        Cmd::Timer("a".into(), 100, Tick::Log("a1".into())),
    )
    .await;
    cast(&a, &pid, Cmd::Timer("b".into(), 200, Tick::Log("b".into()))).await;
    cast(&a, &pid, Cmd::Timer("c".into(), 150, Tick::Log("c".into()))).await;
    // Replace a (now due at 300 ms), cancel c; events and a state change touch none of them.
    cast(
        &a,
        &pid,
        Cmd::Timer("a".into(), 300, Tick::Log("a2".into())),
    )
    .await;
    cast(&a, &pid, Cmd::CancelTimer("c".into())).await;
    cast(&a, &pid, Cmd::Poke).await;
    expect(&mut ev, "poke in Locked").await;
    cast(&a, &pid, Cmd::Go(St::Open)).await;
    expect(&mut ev, "enter Locked->Open").await;
    let b = expect(&mut ev, "timeout b b in Open").await;
    let a2 = expect(&mut ev, "timeout a a2 in Open").await;
    assert!(b - set >= Duration::from_millis(200));
    assert!(a2 - set >= Duration::from_millis(300));
    quiet(&mut ev, Duration::from_millis(200)).await;
    // A named timeout can change the state.
    cast(
        &a,
        &pid,
        Cmd::Timer("go".into(), 10, Tick::GoTo(St::Closed)),
    )
    .await;
    expect(&mut ev, "timeout go to Closed in Open").await;
    expect(&mut ev, "enter Open->Closed").await;
    a.exit(&pid, ExitReason::Kill).await.unwrap();
    tables_empty(&a).await;
    a.shutdown().await;
}

on_both_transports!(postponed_events_are_retried_in_order_after_a_state_change);
async fn postponed_events_are_retried_in_order_after_a_state_change(net: Net) {
    let (a, b) = pair(&net, "pp").await;
    let (m, mut ev) = machine(St::Closed);
    let pid = gen_statem::start(&b, m).await.unwrap();
    expect(&mut ev, "enter Closed->Closed").await;
    // A call postponed while Closed is answered after the state changes.
    let waiting = {
        let (a, pid) = (a.clone(), pid.clone());
        tokio::spawn(async move {
            gen_statem::call::<Answer, _, _, _>(&a, &pid, &Query::WhenNotClosed, WAIT).await
        })
    };
    for n in 1..=3 {
        cast(&a, &pid, Cmd::Item(n)).await;
    }
    // A transition that is not a state change retries nothing.
    cast(&a, &pid, Cmd::SameState).await;
    cast(&a, &pid, Cmd::Poke).await;
    // The state change inserts two internal events: they come first, then the postponed
    // events in their order, then what was sent after.
    cast(
        &a,
        &pid,
        Cmd::GoAndInsert(St::Open, vec!["x".into(), "y".into()]),
    )
    .await;
    cast(&a, &pid, Cmd::Item(4)).await;
    assert_eq!(waiting.await.unwrap(), Ok(Answer::State(St::Open)));
    let l = log(&a, &pid).await;
    assert_eq!(
        l,
        [
            "enter Closed->Closed",
            "postpone 1",
            "postpone 2",
            "postpone 3",
            "poke in Closed",
            "enter Closed->Open",
            "internal x in Open",
            "internal y in Open",
            "item 1 in Open",
            "item 2 in Open",
            "item 3 in Open",
            "item 4 in Open",
        ]
    );
    a.exit(&pid, ExitReason::Kill).await.unwrap();
    tables_empty(&a).await;
    tables_empty(&b).await;
    a.shutdown().await;
    b.shutdown().await;
}

on_both_transports!(next_events_come_before_queued_events_in_the_order_given);
async fn next_events_come_before_queued_events_in_the_order_given(net: Net) {
    let a = node(&net, "ne").await;
    let (m, _ev) = machine(St::Closed);
    let pid = gen_statem::start(&a, m).await.unwrap();
    // Burst and Item(4) are postponed; the state change queues them again, and Burst's
    // inserted events (two internal ones and a cast) come before Item(4), which is queued
    // already, and before Item(9), still in the mailbox.
    let from = a.process();
    for cmd in [
        Cmd::Burst(vec!["1".into(), "2".into()], 3),
        Cmd::Item(4),
        Cmd::Go(St::Locked),
        Cmd::Item(9),
    ] {
        gen_statem::cast(&from, &pid, &cmd).await.unwrap();
    }
    let l = log(&a, &pid).await;
    assert_eq!(
        l,
        [
            "enter Closed->Closed",
            "postpone burst",
            "postpone 4",
            "enter Closed->Locked",
            "internal 1 in Locked",
            "internal 2 in Locked",
            "item 3 in Locked",
            "item 4 in Locked",
            "item 9 in Locked",
        ]
    );
    drop(from);
    a.exit(&pid, ExitReason::Kill).await.unwrap();
    tables_empty(&a).await;
    a.shutdown().await;
}

on_both_transports!(enter_calls_run_on_every_state_change_and_for_the_initial_state);
async fn enter_calls_run_on_every_state_change_and_for_the_initial_state(net: Net) {
    let a = node(&net, "en").await;
    let (m, mut ev) = machine(St::Open);
    let pid = gen_statem::start(&a, m).await.unwrap();
    cast(&a, &pid, Cmd::Go(St::Closed)).await;
    cast(&a, &pid, Cmd::Go(St::Closed)).await;
    cast(&a, &pid, Cmd::SameState).await;
    cast(&a, &pid, Cmd::Go(St::Locked)).await;
    let l = log(&a, &pid).await;
    assert_eq!(
        l,
        [
            "enter Open->Open",
            "enter Open->Closed",
            "enter Closed->Locked"
        ]
    );
    // An enter call that changes the state stops the machine with an error.
    let mut w = a.process();
    w.monitor(&pid).await;
    cast(&a, &pid, Cmd::BadEnter).await;
    cast(&a, &pid, Cmd::Go(St::Open)).await;
    let env = w.recv_timeout(WAIT).await.unwrap();
    match env.signal() {
        Some(Signal::Down(d)) => assert!(
            matches!(&d.reason, ExitReason::Error(e) if e.contains("state enter call changed the state")),
            "{:?}",
            d.reason
        ),
        other => panic!("expected a Down, got {other:?}"),
    }
    for _ in 0..3 {
        ev.recv().await.unwrap();
    }
    expect(&mut ev, "enter Locked->Open").await;
    let (_, last) = ev.recv().await.unwrap();
    assert!(last.starts_with("terminate"), "{last}");
    drop(w);
    tables_empty(&a).await;
    a.shutdown().await;
}

on_both_transports!(calls_and_casts_across_nodes_and_failures);
async fn calls_and_casts_across_nodes_and_failures(net: Net) {
    let (a, b) = pair(&net, "rc").await;
    let (mut m, mut ev) = machine(St::Locked);
    m.open_for = Some(100);
    gen_statem::start_named(&b, "door", m).await.unwrap();
    let door = Node::name_on(b.name(), "door").unwrap();
    let state: Answer = gen_statem::call(&a, &door, &Query::State, WAIT)
        .await
        .unwrap();
    assert_eq!(state, Answer::State(St::Locked));
    gen_statem::cast(&a, &door, &Cmd::Go(St::Open))
        .await
        .unwrap();
    let state: Answer = gen_statem::call(&a, &door, &Query::State, WAIT)
        .await
        .unwrap();
    assert_eq!(state, Answer::State(St::Open));
    expect(&mut ev, "enter Locked->Locked").await;
    expect(&mut ev, "enter Locked->Open").await;
    expect(&mut ev, "state_timeout to Locked in Open").await;
    expect(&mut ev, "enter Open->Locked").await;
    let state: Answer = gen_statem::call(&a, &door, &Query::State, WAIT)
        .await
        .unwrap();
    assert_eq!(state, Answer::State(St::Locked));
    // Stop with a reply; then NoProc.
    let bye: Answer = gen_statem::call(&a, &door, &Query::StopWith("done".into()), WAIT)
        .await
        .unwrap();
    assert_eq!(bye, Answer::Stopping);
    expect(&mut ev, "terminate done in Locked").await;
    let gone: Result<Answer, _> = gen_statem::call(&a, &door, &Query::State, WAIT).await;
    assert_eq!(gone, Err(CallError::NoProc));
    // Init failure.
    let (mut m, _ev) = machine(St::Locked);
    m.fail_init = true;
    assert_eq!(
        gen_statem::start(&b, m).await.err(),
        Some(ServerStartError::Init(ExitReason::error("cannot start")))
    );
    // A call waiting when the machine's node goes down fails fast.
    let (m, _ev) = machine(St::Closed);
    let pid = gen_statem::start(&b, m).await.unwrap();
    let long = Duration::from_secs(120);
    let started = Instant::now();
    let waiting = {
        let (a, pid) = (a.clone(), pid.clone());
        tokio::spawn(async move {
            gen_statem::call::<Answer, _, _, _>(&a, &pid, &Query::WhenNotClosed, long).await
        })
    };
    // The machine has the call once the log that follows it is answered.
    log(&a, &pid).await;
    b.shutdown().await;
    assert_eq!(
        waiting.await.unwrap(),
        Err(CallError::NodeDown(b.name().clone()))
    );
    assert!(started.elapsed() < long / 4);
    tables_empty(&a).await;
    a.shutdown().await;
}

on_both_transports!(a_linked_machine_reports_to_its_parent);
async fn a_linked_machine_reports_to_its_parent(net: Net) {
    let a = node(&net, "lk").await;
    let mut parent = a.process();
    parent.trap_exits(true);
    let (m, _ev) = machine(St::Locked);
    let child = gen_statem::start_link_named(&parent, "linked", m).unwrap();
    let bye: Answer = gen_statem::call(
        &a,
        &Node::name_on(a.name(), "linked").unwrap(),
        &Query::StopWith("finished".into()),
        WAIT,
    )
    .await
    .unwrap();
    assert_eq!(bye, Answer::Stopping);
    let env = parent.recv_timeout(WAIT).await.unwrap();
    match env.signal() {
        Some(Signal::Exit(e)) => assert_eq!(
            (e.from.as_ref(), &e.reason),
            (Some(&child), &ExitReason::error("finished"))
        ),
        other => panic!("expected an exit signal, got {other:?}"),
    }
    drop(parent);
    tables_empty(&a).await;
    a.shutdown().await;
}
