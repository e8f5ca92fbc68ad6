//! Two nodes on loopback. A process on `watcher` monitors processes on `worker`: one that
//! ends (its `Down` carries its exit reason), then one whose node goes away (its `Down` says
//! `noconnection`).
//!
//! `cargo run --example monitor`

use std::time::Duration;

use partisan::{Node, NodeBuilder, Process, SendOptions, Signal};

/// The `Down` waiting next in `p`'s mailbox, as (target, reason).
async fn next_down(p: &mut Process) -> Result<(String, String), Box<dyn std::error::Error>> {
    let env = p.recv_timeout(Duration::from_secs(10)).await?;
    match env.signal() {
        Some(Signal::Down(d)) => Ok((d.target.to_string(), d.reason.to_string())),
        other => Err(format!("expected a Down, got {other:?}").into()),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = NodeBuilder::new("watcher@127.0.0.1")
        .cookie("example")
        .start()
        .await?;
    let b = NodeBuilder::new("worker@127.0.0.1")
        .cookie("example")
        .start()
        .await?;
    a.join_and_wait(b.listen_addrs()[0], Duration::from_secs(10))
        .await?;

    // On `worker`: a process that ends with the reason it is sent, and one that just waits.
    b.spawn_named("job", |mut me| async move {
        match me.recv().await {
            Some(m) => Err(String::from_utf8_lossy(&m.payload).to_string()),
            None => Ok(()),
        }
    })?;
    b.spawn_named("idle", |mut me| async move {
        while me.recv().await.is_some() {}
    })?;

    let mut watcher = a.process();
    let job = Node::name_on(b.name(), "job")?;
    let idle = Node::name_on(b.name(), "idle")?;
    watcher.monitor(&job).await;
    watcher.monitor(&idle).await;

    // 1. The remote process ends: its Down carries its reason.
    watcher
        .send(&job, "disk full", &SendOptions::default())
        .await?;
    let (t1, r1) = next_down(&mut watcher).await?;
    println!("Down of {t1}: {r1}");

    // 2. The remote node goes away: the monitor of its other process fires with noconnection.
    b.shutdown().await;
    let (t2, r2) = next_down(&mut watcher).await?;
    println!("Down of {t2}: {r2}");

    assert_eq!(r1, "disk full");
    assert_eq!(r2, "noconnection");
    // Nothing is left in the monitor tables (their cleanup may trail the Down by a moment).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while a.stats().processes.table_entries() != 0 {
        if tokio::time::Instant::now() > deadline {
            return Err("monitor entries left behind".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "monitor: a remote exit gave Down \"{r1}\", losing {} gave Down \"{r2}\", and no monitor entry is left",
        b.name()
    );
    Ok(())
}
