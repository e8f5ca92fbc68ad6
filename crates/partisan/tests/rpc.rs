//! RPC: call, cast, multicall, local calls, request ids against late replies, caught
//! handler panics, unknown names, the concurrency bound, and calls failing fast when their
//! node goes down. Each test runs over loopback TCP and over the in-memory transport with
//! tokio's paused clock (`on_both_transports!`); nodes bind port 0; waits poll with a deadline.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use partisan::{Config, Node, NodeName, RpcContext, RpcError, RpcRegisterError};
use tokio::time::Instant;

mod support;
use support::{eventually, init_tracing, Net};

const WAIT: Duration = Duration::from_secs(20);

async fn node(net: &Net, name: &str) -> Node {
    node_with(net, name, |_| {}).await
}

async fn node_with(net: &Net, name: &str, f: impl FnOnce(&mut Config)) -> Node {
    init_tracing();
    net.builder(&format!("{name}@127.0.0.1"))
        .listen("127.0.0.1:0")
        .cookie("rpc")
        .configure(|c| c.reconnect_min = 20)
        .configure(f)
        .start()
        .await
        .expect("node starts")
}

/// Two connected nodes; `b` serves `add`.
async fn pair(net: &Net, prefix: &str) -> (Node, Node) {
    let a = node(net, &format!("{prefix}_a")).await;
    let b = node(net, &format!("{prefix}_b")).await;
    a.connect(b.listen_addrs()[0]).await.unwrap();
    b.rpc_register("add", |(x, y): (i64, i64)| async move { x + y })
        .unwrap();
    (a, b)
}

/// A value whose encoding always fails.
struct Unencodable;

impl serde::Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("not encodable"))
    }
}

on_both_transports!(call_and_cast_run_the_named_handler_on_the_remote_node);
async fn call_and_cast_run_the_named_handler_on_the_remote_node(net: Net) {
    let (a, b) = pair(&net, "basic").await;
    let sum: i64 = a.call(b.name(), "add", &(2i64, 3i64), WAIT).await.unwrap();
    assert_eq!(sum, 5);
    // No limit in practice.
    let sum: i64 = a
        .call(b.name(), "add", &(2i64, 3i64), Duration::MAX)
        .await
        .unwrap();
    assert_eq!(sum, 5);

    // A handler that learns who called.
    b.rpc_register_with("who", |ctx: RpcContext, (): ()| async move {
        (ctx.caller_node().to_string(), ctx.is_cast())
    })
    .unwrap();
    let who: (String, bool) = a.call(b.name(), "who", &(), WAIT).await.unwrap();
    assert_eq!(who, (a.name().to_string(), false));

    // Cast: fire and forget; the handler runs on b.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(u64, String, bool)>(16);
    b.rpc_register_with("record", move |ctx: RpcContext, v: u64| {
        let tx = tx.clone();
        async move {
            let _ = tx
                .send((v, ctx.caller_node().to_string(), ctx.is_cast()))
                .await;
        }
    })
    .unwrap();
    a.cast(b.name(), "record", &7u64).await.unwrap();
    let got = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, (7, a.name().to_string(), true));

    // A cast to an unknown name is sent, then dropped and counted at the callee.
    a.cast(b.name(), "nobody", &1u8).await.unwrap();
    eventually("unknown cast counted", || b.rpc_stats().unknown_name == 1).await;

    let sa = a.stats().rpc;
    assert_eq!((sa.calls, sa.casts, sa.pending), (3, 2, 0));
    assert_eq!(b.rpc_stats().served, 4);
    assert_eq!(
        b.rpc_handlers(),
        vec!["add".to_string(), "record".into(), "who".into()]
    );
    a.shutdown().await;
    b.shutdown().await;
}

on_both_transports!(registering_a_name_twice_or_a_bad_name_is_an_error);
async fn registering_a_name_twice_or_a_bad_name_is_an_error(net: Net) {
    let a = node(&net, "reg_a").await;
    a.rpc_register("x", |(): ()| async {}).unwrap();
    assert_eq!(
        a.rpc_register("x", |v: u8| async move { v }),
        Err(RpcRegisterError::Taken("x".into()))
    );
    assert!(matches!(
        a.rpc_register("", |(): ()| async {}),
        Err(RpcRegisterError::InvalidName(_))
    ));
    assert!(matches!(
        a.rpc_register(&"n".repeat(256), |(): ()| async {}),
        Err(RpcRegisterError::InvalidName(_))
    ));
    assert!(a.rpc_unregister("x"));
    assert!(!a.rpc_unregister("x"));
    a.rpc_register("x", |v: u8| async move { v }).unwrap();
    // The server's name is reserved.
    assert!(a.process_named(partisan::RPC_SERVER_NAME).is_err());
    // The concurrency bound is checked like every other key.
    let bad = Config {
        name: Some("c@127.0.0.1".into()),
        cookie: Some("c".into()),
        rpc_concurrency: 0,
        ..Config::default()
    };
    let e = bad.validate().unwrap_err().to_string();
    assert!(e.contains("rpc_concurrency"), "{e}");
    a.shutdown().await;
}

on_both_transports!(a_call_to_this_node_itself_runs_locally);
async fn a_call_to_this_node_itself_runs_locally(net: Net) {
    let a = node(&net, "self_a").await;
    a.rpc_register("double", |v: u32| async move { v * 2 })
        .unwrap();
    let r: u32 = a.call(a.name(), "double", &21u32, WAIT).await.unwrap();
    assert_eq!(r, 42);
    let e = a
        .call::<_, u32>(a.name(), "triple", &1u32, WAIT)
        .await
        .unwrap_err();
    assert_eq!(
        e,
        RpcError::UnknownName {
            node: a.name().clone(),
            name: "triple".into()
        }
    );
    a.cast(a.name(), "double", &1u32).await.unwrap();
    eventually("local cast served", || a.rpc_stats().served == 2).await;
    let sent: u64 = a.stats().channels.values().map(|c| c.frames_sent).sum();
    assert_eq!(sent, 0, "local calls never touch the network");
    a.shutdown().await;
}

on_both_transports!(an_unknown_name_is_answered_by_the_callee_not_timed_out);
async fn an_unknown_name_is_answered_by_the_callee_not_timed_out(net: Net) {
    let a = node(&net, "unk_a").await;
    let b = node(&net, "unk_b").await; // no handler at all
    a.connect(b.listen_addrs()[0]).await.unwrap();
    let timeout = Duration::from_secs(30);
    let t0 = Instant::now();
    let e = a
        .call::<_, ()>(b.name(), "missing", &(), timeout)
        .await
        .unwrap_err();
    assert_eq!(
        e,
        RpcError::UnknownName {
            node: b.name().clone(),
            name: "missing".into()
        }
    );
    assert!(t0.elapsed() < timeout / 2, "answered, not timed out");
    assert_eq!(b.rpc_stats().unknown_name, 1);
    assert_eq!(a.rpc_stats().timeouts, 0);
    a.shutdown().await;
    b.shutdown().await;
}

on_both_transports!(wrong_types_are_decode_errors_not_panics);
async fn wrong_types_are_decode_errors_not_panics(net: Net) {
    let (a, b) = pair(&net, "types").await;
    // Arguments the handler cannot decode: the callee says so, and keeps serving.
    match a.call::<_, i64>(b.name(), "add", &(), WAIT).await {
        Err(RpcError::Decode { reason, .. }) => {
            assert!(reason.contains("arguments"), "{reason}")
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
    // A result that does not decode into the type asked for.
    b.rpc_register("text", |(): ()| async { "hello".to_string() })
        .unwrap();
    match a.call::<_, bool>(b.name(), "text", &(), WAIT).await {
        Err(RpcError::Decode { reason, .. }) => assert!(reason.contains("result"), "{reason}"),
        other => panic!("expected a decode error, got {other:?}"),
    }
    // Arguments that cannot be encoded are refused here; a result that cannot be encoded is
    // reported by the callee.
    match a.call::<_, i64>(b.name(), "add", &Unencodable, WAIT).await {
        Err(RpcError::Encode { reason, .. }) => assert!(reason.contains("arguments"), "{reason}"),
        other => panic!("expected an encode error, got {other:?}"),
    }
    b.rpc_register("bad", |(): ()| async { Unencodable })
        .unwrap();
    match a.call::<_, ()>(b.name(), "bad", &(), WAIT).await {
        Err(RpcError::Encode { reason, .. }) => {
            assert!(
                reason.contains("result") && reason.contains("at"),
                "{reason}"
            )
        }
        other => panic!("expected an encode error, got {other:?}"),
    }
    // Too large for a frame: nothing is sent.
    let huge = vec![0u8; 9 << 20];
    match a.call::<_, ()>(b.name(), "add", &huge, WAIT).await {
        Err(RpcError::Send {
            source: partisan::SendError::TooLarge { .. },
            ..
        }) => {}
        other => panic!("expected a send error, got {other:?}"),
    }
    let ok: i64 = a.call(b.name(), "add", &(1i64, 1i64), WAIT).await.unwrap();
    assert_eq!(ok, 2);
    assert_eq!(a.rpc_stats().pending, 0);
    a.shutdown().await;
    b.shutdown().await;
}

on_both_transports!(a_late_reply_is_dropped_not_taken_for_the_next_calls_answer);
async fn a_late_reply_is_dropped_not_taken_for_the_next_calls_answer(net: Net) {
    let (a, b) = pair(&net, "late").await;
    b.rpc_register("sleep", |ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    })
    .unwrap();
    // The first call gives up before its handler answers...
    let e = a
        .call::<_, u64>(b.name(), "sleep", &300u64, Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(matches!(e, RpcError::Timeout { .. }), "{e:?}");
    // ...and its answer (300) arrives while the second call waits: the second call still
    // gets its own answer.
    let r: u64 = a.call(b.name(), "sleep", &800u64, WAIT).await.unwrap();
    assert_eq!(r, 800);
    let s = a.rpc_stats();
    assert_eq!((s.timeouts, s.late_replies, s.pending), (1, 1, 0));
    a.shutdown().await;
    b.shutdown().await;
}

on_both_transports!(a_panicking_handler_is_answered_as_a_panic_and_the_node_keeps_serving);
async fn a_panicking_handler_is_answered_as_a_panic_and_the_node_keeps_serving(net: Net) {
    let (a, b) = pair(&net, "panic").await;
    b.rpc_register("fragile", |v: u32| async move {
        if v > 0 {
            panic!("kaboom {v}");
        }
        v
    })
    .unwrap();
    match a.call::<_, u32>(b.name(), "fragile", &7u32, WAIT).await {
        Err(RpcError::Panicked {
            node,
            name,
            message,
        }) => {
            assert_eq!((&node, name.as_str()), (b.name(), "fragile"));
            assert!(message.contains("kaboom 7"), "{message}");
        }
        other => panic!("expected a panic error, got {other:?}"),
    }
    // A panic in a cast is caught too.
    a.cast(b.name(), "fragile", &1u32).await.unwrap();
    eventually("cast panic caught", || b.rpc_stats().handler_panics == 2).await;
    // The same handler and the others still serve.
    let v: u32 = a.call(b.name(), "fragile", &0u32, WAIT).await.unwrap();
    assert_eq!(v, 0);
    let sum: i64 = a.call(b.name(), "add", &(4i64, 5i64), WAIT).await.unwrap();
    assert_eq!(sum, 9);
    assert_eq!(b.rpc_stats().running, 0);
    a.shutdown().await;
    b.shutdown().await;
}

on_both_transports!(a_thousand_concurrent_calls_each_get_their_own_answer);
async fn a_thousand_concurrent_calls_each_get_their_own_answer(net: Net) {
    let (a, b) = pair(&net, "many").await;
    b.rpc_register("echo", |v: u64| async move {
        tokio::task::yield_now().await;
        v
    })
    .unwrap();
    let tasks: Vec<_> = (0..1000u64)
        .map(|i| {
            let (a, to) = (a.clone(), b.name().clone());
            tokio::spawn(async move { (i, a.call::<_, u64>(&to, "echo", &i, WAIT).await) })
        })
        .collect();
    for t in tasks {
        let (i, r) = t.await.unwrap();
        assert_eq!(r, Ok(i));
    }
    let (sa, sb) = (a.rpc_stats(), b.rpc_stats());
    assert_eq!((sa.calls, sa.pending, sa.late_replies), (1000, 0, 0));
    assert_eq!(sb.served, 1000);
    a.shutdown().await;
    b.shutdown().await;
}

on_both_transports!(handlers_run_concurrently_up_to_the_configured_bound);
async fn handlers_run_concurrently_up_to_the_configured_bound(net: Net) {
    let a = node(&net, "bound_a").await;
    let b = node_with(&net, "bound_b", |c| c.rpc_concurrency = 8).await;
    a.connect(b.listen_addrs()[0]).await.unwrap();
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (r, m) = (running.clone(), most.clone());
    b.rpc_register("slow", move |v: u64| {
        let (r, m) = (r.clone(), m.clone());
        async move {
            let now = r.fetch_add(1, SeqCst) + 1;
            m.fetch_max(now, SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            r.fetch_sub(1, SeqCst);
            v
        }
    })
    .unwrap();
    let tasks: Vec<_> = (0..100u64)
        .map(|i| {
            let (a, to) = (a.clone(), b.name().clone());
            tokio::spawn(async move { a.call::<_, u64>(&to, "slow", &i, WAIT).await })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.unwrap(), Ok(i as u64));
    }
    let most = most.load(SeqCst);
    assert!(
        most <= 8,
        "{most} handlers ran at once, over the bound of 8"
    );
    assert!(most >= 2, "handlers ran one at a time ({most})");
    a.shutdown().await;
    b.shutdown().await;
}

on_both_transports!(multicall_gives_one_result_per_node_and_a_down_node_fails_only_its_own);
async fn multicall_gives_one_result_per_node_and_a_down_node_fails_only_its_own(net: Net) {
    let a = node(&net, "multi_a").await;
    let b = node(&net, "multi_b").await;
    let c = node(&net, "multi_c").await;
    for n in [&b, &c] {
        a.connect(n.listen_addrs()[0]).await.unwrap();
    }
    for n in [&a, &b, &c] {
        let name = n.name().to_string();
        n.rpc_register("name", move |(): ()| {
            let name = name.clone();
            async move { name }
        })
        .unwrap();
    }
    let all = [a.name().clone(), b.name().clone(), c.name().clone()];
    let r = a.multicall::<_, String>(&all, "name", &(), WAIT).await;
    let got: Vec<_> = r.into_iter().map(|(n, r)| (n, r.unwrap())).collect();
    let want: Vec<_> = all.iter().map(|n| (n.clone(), n.to_string())).collect();
    assert_eq!(
        got, want,
        "one answer per node, in order, the local one included"
    );

    let c_name = c.name().clone();
    c.shutdown().await;
    eventually("c gone", || !a.is_connected(&c_name)).await;
    let ghost = NodeName::new("ghost@127.0.0.1").unwrap();
    let nodes = [
        b.name().clone(),
        c_name.clone(),
        ghost.clone(),
        a.name().clone(),
    ];
    let timeout = Duration::from_secs(30);
    let t0 = Instant::now();
    let r = a.multicall::<_, String>(&nodes, "name", &(), timeout).await;
    assert!(t0.elapsed() < timeout / 2, "down nodes fail at once");
    assert_eq!(r.len(), 4);
    assert_eq!(r[0], (b.name().clone(), Ok(b.name().to_string())));
    assert_eq!(
        r[1],
        (c_name.clone(), Err(RpcError::NotConnected { node: c_name }))
    );
    assert_eq!(
        r[2],
        (ghost.clone(), Err(RpcError::NotConnected { node: ghost }))
    );
    assert_eq!(r[3], (a.name().clone(), Ok(a.name().to_string())));
    a.shutdown().await;
    b.shutdown().await;
}

on_both_transports!(a_call_fails_with_node_down_as_soon_as_its_node_stops_not_at_the_timeout);
async fn a_call_fails_with_node_down_as_soon_as_its_node_stops_not_at_the_timeout(net: Net) {
    let (a, b) = pair(&net, "down").await;
    b.rpc_register("hang", |(): ()| async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    })
    .unwrap();
    let timeout = Duration::from_secs(60);
    let caller = {
        let (a, to) = (a.clone(), b.name().clone());
        tokio::spawn(async move {
            let t0 = Instant::now();
            let r = a.call::<_, ()>(&to, "hang", &(), timeout).await;
            (r, t0.elapsed())
        })
    };
    eventually("the handler runs", || b.rpc_stats().running == 1).await;
    let b_name = b.name().clone();
    b.shutdown().await;
    let (r, elapsed) = tokio::time::timeout(WAIT, caller).await.unwrap().unwrap();
    assert_eq!(
        r,
        Err(RpcError::NodeDown {
            node: b_name.clone(),
            name: "hang".into()
        })
    );
    assert!(
        elapsed < timeout / 4,
        "node-down took {elapsed:?}, timeout {timeout:?}"
    );
    let s = a.rpc_stats();
    assert_eq!((s.node_down, s.timeouts, s.pending), (1, 0, 0));
    // A call to the stopped node now fails at once.
    let t0 = Instant::now();
    let e = a
        .call::<_, i64>(&b_name, "add", &(1i64, 2i64), timeout)
        .await
        .unwrap_err();
    assert_eq!(e, RpcError::NotConnected { node: b_name });
    assert!(t0.elapsed() < timeout / 4);
    a.shutdown().await;
}

on_both_transports!(a_dropped_call_leaves_nothing_pending);
async fn a_dropped_call_leaves_nothing_pending(net: Net) {
    let (a, b) = pair(&net, "drop").await;
    b.rpc_register("sleep", |ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    })
    .unwrap();
    let abandoned = tokio::time::timeout(
        Duration::from_millis(50),
        a.call::<_, u64>(b.name(), "sleep", &200u64, WAIT),
    )
    .await;
    assert!(abandoned.is_err());
    assert_eq!(a.rpc_stats().pending, 0);
    eventually("the abandoned call's reply counted late", || {
        a.rpc_stats().late_replies == 1
    })
    .await;
    // A call waiting when its own node stops fails with Stopped.
    let waiting = {
        let (a, to) = (a.clone(), b.name().clone());
        tokio::spawn(async move { a.call::<_, u64>(&to, "sleep", &60_000u64, WAIT).await })
    };
    eventually("the call is pending", || a.rpc_stats().pending == 1).await;
    a.shutdown().await;
    assert_eq!(
        tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap(),
        Err(RpcError::Stopped)
    );
    // Calls of a stopped node fail with one clear error.
    assert_eq!(
        a.call::<_, i64>(b.name(), "add", &(1i64, 1i64), WAIT).await,
        Err(RpcError::Stopped)
    );
    b.shutdown().await;
}
