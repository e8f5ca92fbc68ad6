//! Two nodes on loopback; a process on each. `ping` sends to `pong` by registered name, `pong`
//! answers the sender's pid, ten times.
//!
//! `cargo run --example ping_pong`

use std::time::Duration;

use partisan::{Node, NodeBuilder, SendOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = NodeBuilder::new("ping@127.0.0.1")
        .cookie("example")
        .start()
        .await?;
    let b = NodeBuilder::new("pong@127.0.0.1")
        .cookie("example")
        .start()
        .await?;
    a.connect(b.listen_addrs()[0]).await?;

    b.spawn_named("pong", |mut me| async move {
        while let Some(msg) = me.recv().await {
            let _ = me.reply(&msg, "pong", &SendOptions::default()).await;
        }
    })?;

    let mut ping = a.process();
    let pong = Node::name_on(b.name(), "pong")?;
    let opts = SendOptions::default();
    let started = std::time::Instant::now();
    for _ in 0..10 {
        ping.send(&pong, "ping", &opts).await?;
        let answer = ping.recv_timeout(Duration::from_secs(5)).await?;
        assert_eq!(&answer.payload[..], b"pong");
    }
    println!(
        "ping_pong: 10 round trips between {} and {} by registered name in {:?}",
        a.name(),
        b.name(),
        started.elapsed()
    );
    Ok(())
}
