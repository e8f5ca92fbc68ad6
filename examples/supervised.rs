//! A one-for-one supervisor keeps a crashing child running: the child panics on its third
//! message, and each time the supervisor starts a new one (a new pid), within its restart
//! intensity.
//!
//! `cargo run --example supervised`

use std::time::Duration;

use partisan::{ChildSpec, Node, NodeBuilder, Pid, SendOptions, Signal, Strategy, Supervisor};

/// The supervisor's running child, once it is not one of `seen` (it may be between restarts).
async fn current_child(
    node: &Node,
    sup: &Pid,
    seen: &[Pid],
) -> Result<Pid, Box<dyn std::error::Error>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(p) = Supervisor::which_children(node, sup).await?[0].pid.clone() {
            if !seen.contains(&p) {
                return Ok(p);
            }
        }
        if tokio::time::Instant::now() > deadline {
            return Err("no new child".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The child's panics are the point of the example: report them in one line each.
    std::panic::set_hook(Box::new(|info| {
        let p = info.payload();
        let msg = p
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| p.downcast_ref::<&str>().copied())
            .unwrap_or("?");
        eprintln!("(a child panicked: {msg})")
    }));
    let node = NodeBuilder::new("supervised@127.0.0.1")
        .cookie("example")
        .start()
        .await?;

    let flaky = ChildSpec::process("flaky", |mut me| async move {
        let mut n = 0;
        while let Some(msg) = me.recv().await {
            n += 1;
            if n == 3 {
                panic!("flaky gave up after {n} messages");
            }
            let _ = me.reply(&msg, "ok", &SendOptions::default()).await;
        }
    });
    let sup = Supervisor::new(Strategy::OneForOne)
        .intensity(5, Duration::from_secs(10))
        .child(flaky)
        .start(&node)?;

    let mut me = node.process();
    let mut crashed = Vec::new();
    for _ in 0..3 {
        let pid = current_child(&node, &sup, &crashed).await?;
        let watch = me.monitor(&pid).await;
        for _ in 0..3 {
            me.send(&pid, "work", &SendOptions::default()).await?;
        }
        // Two answers, then the Down of its panic.
        let mut answers = 0;
        loop {
            let env = me.recv_timeout(Duration::from_secs(5)).await?;
            match env.signal() {
                Some(Signal::Down(d)) if d.monitor == watch => {
                    println!("child {pid} ended: {}", d.reason);
                    break;
                }
                _ => answers += 1,
            }
        }
        assert_eq!(answers, 2);
        crashed.push(pid);
    }
    let running = current_child(&node, &sup, &crashed).await?;
    Supervisor::stop(&node, &sup).await?;
    println!(
        "supervised: the child panicked 3 times and its one-for-one supervisor restarted it each time (now {running})"
    );
    Ok(())
}
