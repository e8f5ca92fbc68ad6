//! GenServer: calls and casts on one node and across nodes, deferred replies, calls to a
//! stopped server and to a lost node, timeouts with late replies, stops with a reply, start
//! and link rules. Each test runs over loopback TCP and over the in-memory transport with a
//! paused clock, and ends with every monitor and link table empty.

mod support;

use std::time::Duration;

use partisan::gen_server::{self, CallResponse, Flow, GenServer};
use partisan::{
    CallError, Envelope, ExitReason, Node, Pid, Process, ReplyTo, SendError, SendOptions,
    ServerStartError, Signal,
};
use serde::{Deserialize, Serialize};
use support::{eventually, node, pair, tables_empty, Net};
use tokio::sync::mpsc;
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(20);

#[derive(Debug, Serialize, Deserialize)]
enum Req {
    Get,
    Add(u64),
    /// Replies with the caller's pid as the server saw it.
    Caller,
    /// A process the server spawns replies `Value(n)`.
    DeferToChild(u64),
    /// The server hands its `ReplyTo` to this process, which replies.
    DeferTo(Pid),
    /// A process the server spawns replies `Value(value)` after `ms`.
    Later {
        ms: u64,
        value: u64,
    },
    /// Never answered.
    Hang,
    /// Stops with `Error(reason)` after replying `Ok`.
    StopWith(String),
    /// The handler panics.
    Crash,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Rep {
    Value(u64),
    Caller(Option<Pid>),
    Ok,
}

/// A counter that reports what it does on `events`.
struct Server {
    count: u64,
    fail_init: bool,
    trap_exits: bool,
    events: mpsc::UnboundedSender<String>,
}

fn server() -> (Server, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        Server {
            count: 0,
            fail_init: false,
            trap_exits: false,
            events: tx,
        },
        rx,
    )
}

impl GenServer for Server {
    type Call = Req;
    type Reply = Rep;
    type Cast = u64;

    async fn init(&mut self, me: &mut Process) -> Result<(), ExitReason> {
        if self.fail_init {
            return Err(ExitReason::error("no thanks"));
        }
        me.trap_exits(self.trap_exits);
        Ok(())
    }

    async fn handle_call(
        &mut self,
        request: Req,
        from: ReplyTo<Rep>,
        me: &mut Process,
    ) -> CallResponse<Rep> {
        match request {
            Req::Get => CallResponse::Reply(Rep::Value(self.count)),
            Req::Add(n) => {
                self.count += n;
                CallResponse::Reply(Rep::Value(self.count))
            }
            Req::Caller => CallResponse::Reply(Rep::Caller(from.caller().cloned())),
            Req::DeferToChild(n) => {
                me.node().spawn(move |p: Process| async move {
                    from.reply(&p, &Rep::Value(n)).await.unwrap();
                });
                CallResponse::NoReply
            }
            Req::DeferTo(helper) => {
                me.send_typed(&helper, &from, &SendOptions::default())
                    .await
                    .unwrap();
                CallResponse::NoReply
            }
            Req::Later { ms, value } => {
                let events = self.events.clone();
                me.node().spawn(move |p: Process| async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    let _ = from.reply(&p, &Rep::Value(value)).await;
                    let _ = events.send(format!("late reply {value} sent"));
                });
                CallResponse::NoReply
            }
            Req::Hang => {
                let _ = self.events.send("hang received".into());
                CallResponse::NoReply
            }
            Req::StopWith(reason) => CallResponse::Stop {
                reason: ExitReason::error(reason),
                reply: Some(Rep::Ok),
            },
            Req::Crash => panic!("crash requested"),
        }
    }

    async fn handle_cast(&mut self, n: u64, _me: &mut Process) -> Flow {
        self.count += n;
        Flow::Continue
    }

    async fn handle_info(&mut self, message: Envelope, _me: &mut Process) -> Flow {
        let text = match message.signal() {
            Some(s) => format!("info signal {s:?}"),
            None => format!("info {}", String::from_utf8_lossy(&message.payload)),
        };
        let _ = self.events.send(text);
        Flow::Continue
    }

    async fn terminate(&mut self, reason: &ExitReason, _me: &mut Process) {
        let _ = self.events.send(format!("terminate: {reason}"));
    }
}

/// The next event the server reported is `what`.
async fn expect(events: &mut mpsc::UnboundedReceiver<String>, what: &str) {
    let got = tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("an event in time")
        .expect("events open");
    assert_eq!(got, what);
}

/// A process on `n`, registered as `name`, that replies `Value(7)` to every `ReplyTo` it is
/// sent.
fn helper(n: &Node, name: &str) -> Pid {
    n.spawn_named(name, |mut me: Process| async move {
        while let Some(env) = me.recv().await {
            let to: ReplyTo<Rep> = env.decode().unwrap();
            to.reply(&me, &Rep::Value(7)).await.unwrap();
        }
    })
    .unwrap()
}

on_both_transports!(call_and_cast_on_one_node_and_across_nodes);
async fn call_and_cast_on_one_node_and_across_nodes(net: Net) {
    let (a, b) = pair(&net, "cc").await;
    let (srv, mut events) = server();
    let pid = gen_server::start_named(&b, "counter", srv).await.unwrap();
    let name = Node::name_on(b.name(), "counter").unwrap();
    let call = |from: &Node, req: Req| {
        let (from, name) = (from.clone(), name.clone());
        async move { gen_server::call::<Rep, _, _, _>(&from, &name, &req, WAIT).await }
    };
    // Local (on b) and remote (from a), by name and by pid.
    assert_eq!(call(&b, Req::Add(1)).await, Ok(Rep::Value(1)));
    assert_eq!(call(&a, Req::Add(2)).await, Ok(Rep::Value(3)));
    let got: Rep = gen_server::call(&a, &pid, &Req::Get, Duration::MAX)
        .await
        .unwrap();
    assert_eq!(got, Rep::Value(3));
    // From a process, the server sees that process as the caller; from a node, a pid of the
    // calling node (the call's own process).
    let w = a.process();
    let got: Rep = gen_server::call(&w, &name, &Req::Caller, WAIT)
        .await
        .unwrap();
    assert_eq!(got, Rep::Caller(Some(w.pid().clone())));
    match call(&a, Req::Caller).await.unwrap() {
        Rep::Caller(Some(p)) => assert_eq!(&p.node, a.name()),
        other => panic!("expected a caller pid, got {other:?}"),
    }
    // Casts, then a call from the same sender: handled in order.
    gen_server::cast(&a, &name, &10u64).await.unwrap();
    gen_server::cast(&w, &pid, &100u64).await.unwrap();
    gen_server::cast(&b, &pid, &1000u64).await.unwrap();
    let got: Rep = gen_server::call(&w, &name, &Req::Get, WAIT).await.unwrap();
    assert_eq!(got, Rep::Value(1113));
    // Any other message goes to handle_info.
    a.send(&pid, "ping", &SendOptions::default()).await.unwrap();
    expect(&mut events, "info ping").await;
    // A request the server cannot decode is answered as such, at once.
    let bad: Result<Rep, _> = gen_server::call(&a, &pid, &u32::MAX, WAIT).await;
    assert!(matches!(bad, Err(CallError::BadRequest(_))), "{bad:?}");
    // stop: terminate runs, the server ends with the reason.
    gen_server::stop(&a, &name, ExitReason::Normal, WAIT)
        .await
        .unwrap();
    expect(&mut events, "terminate: normal").await;
    assert_eq!(b.whereis("counter"), None);
    drop(w);
    tables_empty(&a).await;
    tables_empty(&b).await;
    a.shutdown().await;
    b.shutdown().await;
}

on_both_transports!(deferred_replies_from_other_processes_on_any_node);
async fn deferred_replies_from_other_processes_on_any_node(net: Net) {
    let (a, b) = pair(&net, "dr").await;
    let (srv, _events) = server();
    let pid = gen_server::start(&b, srv).await.unwrap();
    // A process the server spawned replies in its place.
    let got: Rep = gen_server::call(&a, &pid, &Req::DeferToChild(5), WAIT)
        .await
        .unwrap();
    assert_eq!(got, Rep::Value(5));
    // The server hands its ReplyTo to a process on another node, which replies: to a
    // caller on its own node, and to a caller on the server's node.
    let on_a = helper(&a, "helper");
    let got: Rep = gen_server::call(&a, &pid, &Req::DeferTo(on_a.clone()), WAIT)
        .await
        .unwrap();
    assert_eq!(got, Rep::Value(7));
    let got: Rep = gen_server::call(&b, &pid, &Req::DeferTo(on_a.clone()), WAIT)
        .await
        .unwrap();
    assert_eq!(got, Rep::Value(7));
    // While a deferred call waits, the server goes on serving others.
    let slow = {
        let (a, pid) = (a.clone(), pid.clone());
        tokio::spawn(async move {
            gen_server::call::<Rep, _, _, _>(&a, &pid, &Req::Later { ms: 300, value: 9 }, WAIT)
                .await
        })
    };
    let got: Rep = gen_server::call(&a, &pid, &Req::Add(1), WAIT)
        .await
        .unwrap();
    assert_eq!(got, Rep::Value(1));
    assert_eq!(slow.await.unwrap(), Ok(Rep::Value(9)));
    a.exit(&on_a, ExitReason::Kill).await.unwrap();
    b.exit(&pid, ExitReason::Kill).await.unwrap();
    tables_empty(&a).await;
    tables_empty(&b).await;
    a.shutdown().await;
    b.shutdown().await;
}

on_both_transports!(calls_to_a_stopped_or_missing_server_fail_with_noproc);
async fn calls_to_a_stopped_or_missing_server_fail_with_noproc(net: Net) {
    let (a, b) = pair(&net, "np").await;
    let (srv, mut events) = server();
    let pid = gen_server::start_named(&b, "gone", srv).await.unwrap();
    gen_server::stop(&a, &pid, ExitReason::Shutdown, WAIT)
        .await
        .unwrap();
    expect(&mut events, "terminate: shutdown").await;
    let name = Node::name_on(b.name(), "gone").unwrap();
    let started = Instant::now();
    for from in [&a, &b] {
        let by_pid: Result<Rep, _> = gen_server::call(from, &pid, &Req::Get, WAIT).await;
        assert_eq!(by_pid, Err(CallError::NoProc));
        let by_name: Result<Rep, _> = gen_server::call(from, &name, &Req::Get, WAIT).await;
        assert_eq!(by_name, Err(CallError::NoProc));
    }
    assert!(started.elapsed() < WAIT / 2, "NoProc comes at once");
    assert_eq!(
        gen_server::stop(&a, &pid, ExitReason::Normal, WAIT).await,
        Err(CallError::NoProc)
    );
    // A cast is fire-and-forget: to a remote server it is queued (and dropped there); a
    // local one that does not exist is an error.
    gen_server::cast(&a, &pid, &1u64).await.unwrap();
    assert!(matches!(
        gen_server::cast(&b, &pid, &1u64).await,
        Err(SendError::NoProcess(_))
    ));
    // A server ending during the call: the call fails with its reason.
    let (srv, mut events) = server();
    let pid = gen_server::start(&b, srv).await.unwrap();
    let crashed: Result<Rep, _> = gen_server::call(&a, &pid, &Req::Crash, WAIT).await;
    assert_eq!(
        crashed,
        Err(CallError::Exit(ExitReason::panic("crash requested")))
    );
    expect(&mut events, "terminate: panic: crash requested").await;
    // A process cannot call itself.
    let me = a.process();
    let own: Result<Rep, _> = gen_server::call(&me, me.pid(), &Req::Get, WAIT).await;
    assert_eq!(own, Err(CallError::CallingSelf));
    drop(me);
    tables_empty(&a).await;
    tables_empty(&b).await;
    a.shutdown().await;
    b.shutdown().await;
}

on_both_transports!(a_call_fails_fast_when_the_server_node_goes_down);
async fn a_call_fails_fast_when_the_server_node_goes_down(net: Net) {
    let (a, b) = pair(&net, "nd").await;
    let (srv, mut events) = server();
    let pid = gen_server::start(&b, srv).await.unwrap();
    let long = Duration::from_secs(120);
    let started = Instant::now();
    let call = {
        let (a, pid) = (a.clone(), pid.clone());
        tokio::spawn(async move {
            let r: Result<Rep, _> = gen_server::call(&a, &pid, &Req::Hang, long).await;
            (r, started.elapsed())
        })
    };
    expect(&mut events, "hang received").await;
    b.shutdown().await;
    let (r, took) = call.await.unwrap();
    assert_eq!(r, Err(CallError::NodeDown(b.name().clone())));
    assert!(took < long / 4, "failed fast, in {took:?}");
    // The server saw its node stop: terminate ran with `shutdown`.
    expect(&mut events, "terminate: shutdown").await;
    // Once it is down, a call fails at once with the same error.
    let started = Instant::now();
    let again: Result<Rep, _> = gen_server::call(&a, &pid, &Req::Get, long).await;
    assert_eq!(again, Err(CallError::NodeDown(b.name().clone())));
    assert!(started.elapsed() < long / 4);
    tables_empty(&a).await;
    a.shutdown().await;
}

on_both_transports!(a_late_reply_after_a_timeout_is_never_taken_for_the_next_answer);
async fn a_late_reply_after_a_timeout_is_never_taken_for_the_next_answer(net: Net) {
    let (a, b) = pair(&net, "lt").await;
    for server_node in [&b, &a] {
        let remote = server_node.name() != a.name();
        let (srv, mut events) = server();
        let pid = gen_server::start(server_node, srv).await.unwrap();
        let mut w = a.process();
        let undeliverable = a.stats().undeliverable;
        // The first call gives up at 50 ms; its reply is sent at 200 ms, while the second
        // call waits (its reply comes at 300 ms).
        let first: Result<Rep, _> = gen_server::call(
            &w,
            &pid,
            &Req::Later { ms: 200, value: 1 },
            Duration::from_millis(50),
        )
        .await;
        assert_eq!(first, Err(CallError::Timeout));
        let second: Result<Rep, _> =
            gen_server::call(&w, &pid, &Req::Later { ms: 250, value: 2 }, WAIT).await;
        assert_eq!(second, Ok(Rep::Value(2)));
        expect(&mut events, "late reply 1 sent").await;
        expect(&mut events, "late reply 2 sent").await;
        // The late reply reached nobody: not the caller's mailbox, not a later call.
        assert!(w.try_recv().is_none());
        let third: Result<Rep, _> = gen_server::call(&w, &pid, &Req::Add(3), WAIT).await;
        assert_eq!(third, Ok(Rep::Value(3)));
        if remote {
            // It was dropped at the caller's node, as a message to a process that ended.
            let aa = a.clone();
            eventually("late reply dropped", move || {
                aa.stats().undeliverable > undeliverable
            })
            .await;
        }
        assert!(w.try_recv().is_none());
        server_node.exit(&pid, ExitReason::Kill).await.unwrap();
        drop(w);
    }
    tables_empty(&a).await;
    tables_empty(&b).await;
    a.shutdown().await;
    b.shutdown().await;
}

on_both_transports!(stop_with_a_reply_replies_before_the_server_ends);
async fn stop_with_a_reply_replies_before_the_server_ends(net: Net) {
    let (a, b) = pair(&net, "sr").await;
    let (srv, mut events) = server();
    let pid = gen_server::start(&b, srv).await.unwrap();
    let mut w = a.process();
    let monitor = w.monitor(&pid).await;
    let got: Rep = gen_server::call(&w, &pid, &Req::StopWith("asked".into()), WAIT)
        .await
        .unwrap();
    assert_eq!(got, Rep::Ok);
    expect(&mut events, "terminate: asked").await;
    let env = w.recv_timeout(WAIT).await.unwrap();
    match env.signal() {
        Some(Signal::Down(d)) => {
            assert_eq!(
                (&d.monitor, &d.reason),
                (&monitor, &ExitReason::error("asked"))
            )
        }
        other => panic!("expected a Down, got {other:?}"),
    }
    let after: Result<Rep, _> = gen_server::call(&w, &pid, &Req::Get, WAIT).await;
    assert_eq!(after, Err(CallError::NoProc));
    drop(w);
    tables_empty(&a).await;
    tables_empty(&b).await;
    a.shutdown().await;
    b.shutdown().await;
}

on_both_transports!(init_failures_and_taken_names_fail_the_start);
async fn init_failures_and_taken_names_fail_the_start(net: Net) {
    let a = node(&net, "in").await;
    let (mut srv, _events) = server();
    srv.fail_init = true;
    assert_eq!(
        gen_server::start(&a, srv).await,
        Err(ServerStartError::Init(ExitReason::error("no thanks")))
    );
    let (srv, _e1) = server();
    gen_server::start_named(&a, "taken", srv).await.unwrap();
    let (srv, _e2) = server();
    assert!(matches!(
        gen_server::start_named(&a, "taken", srv).await,
        Err(ServerStartError::Name(partisan::RegisterError::Taken(_)))
    ));
    // Linked start with a taken name: an error, nothing started, nothing heard by the parent.
    let mut parent = a.process();
    parent.trap_exits(true);
    let before = a.process_count();
    let (srv, _e3) = server();
    assert!(matches!(
        gen_server::start_link_named(&parent, "taken", srv),
        Err(ServerStartError::Name(_))
    ));
    let aa = a.clone();
    eventually("the gated child gone", move || aa.process_count() == before).await;
    assert!(parent.try_recv().is_none());
    // A linked start returns at once; an init failure reaches the parent over the link.
    let (mut srv, _e4) = server();
    srv.fail_init = true;
    let child = gen_server::start_link(&parent, srv).unwrap();
    let env = parent.recv_timeout(WAIT).await.unwrap();
    match env.signal() {
        Some(Signal::Exit(e)) => assert_eq!(
            (e.from.as_ref(), &e.reason),
            (Some(&child), &ExitReason::error("no thanks"))
        ),
        other => panic!("expected an exit signal, got {other:?}"),
    }
    drop(parent);
    tables_empty(&a).await;
    a.shutdown().await;
}

on_both_transports!(a_linked_server_and_its_parent);
async fn a_linked_server_and_its_parent(net: Net) {
    let (a, b) = pair(&net, "ln").await;
    let mut parent = a.process();
    parent.trap_exits(true);
    // A crash reaches the parent as an exit signal.
    let (srv, _events) = server();
    let child = gen_server::start_link(&parent, srv).unwrap();
    let got: Rep = gen_server::call(&b, &child, &Req::Add(2), WAIT)
        .await
        .unwrap();
    assert_eq!(got, Rep::Value(2));
    let crashed: Result<Rep, _> = gen_server::call(&b, &child, &Req::Crash, WAIT).await;
    assert!(matches!(
        crashed,
        Err(CallError::Exit(ExitReason::Panic(_)))
    ));
    let env = parent.recv_timeout(WAIT).await.unwrap();
    match env.signal() {
        Some(Signal::Exit(e)) => {
            assert_eq!(e.from.as_ref(), Some(&child));
            assert_eq!(e.reason, ExitReason::panic("crash requested"));
        }
        other => panic!("expected an exit signal, got {other:?}"),
    }
    // A server that traps exits stops on its parent's exit signal, after terminate, with
    // that signal's reason.
    let (mut srv, mut events) = server();
    srv.trap_exits = true;
    let child = gen_server::start_link_named(&parent, "linked", srv).unwrap();
    let got: Rep = gen_server::call(
        &b,
        &Node::name_on(a.name(), "linked").unwrap(),
        &Req::Get,
        WAIT,
    )
    .await
    .unwrap();
    assert_eq!(got, Rep::Value(0));
    parent.exit(&child, ExitReason::Shutdown).await.unwrap();
    expect(&mut events, "terminate: shutdown").await;
    let env = parent.recv_timeout(WAIT).await.unwrap();
    match env.signal() {
        Some(Signal::Exit(e)) => {
            assert_eq!(
                (e.from.as_ref(), &e.reason),
                (Some(&child), &ExitReason::Shutdown)
            )
        }
        other => panic!("expected an exit signal, got {other:?}"),
    }
    // Other trapped exit signals are info.
    let (mut srv, mut events) = server();
    srv.trap_exits = true;
    let child = gen_server::start(&a, srv).await.unwrap();
    a.exit(&child, ExitReason::error("hint")).await.unwrap();
    let got = tokio::time::timeout(WAIT, events.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(got.starts_with("info signal Exit"), "{got}");
    // Killed, it does not run terminate: its state is dropped without another event.
    a.exit(&child, ExitReason::Kill).await.unwrap();
    let after = tokio::time::timeout(WAIT, events.recv()).await.unwrap();
    assert_eq!(after, None);
    drop(parent);
    tables_empty(&a).await;
    tables_empty(&b).await;
    a.shutdown().await;
    b.shutdown().await;
}
