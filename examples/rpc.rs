//! Two nodes on loopback. `server` registers typed RPC handlers; `client` calls them: a
//! plain call, a handler that learns its caller, an unknown name, a handler that panics (the
//! server goes on serving), a call that times out, a cast and a multicall over both nodes.
//!
//! `cargo run --example rpc`

use std::time::Duration;

use partisan::{NodeBuilder, RpcContext, RpcError};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = NodeBuilder::new("client@127.0.0.1")
        .cookie("example")
        .start()
        .await?;
    let server = NodeBuilder::new("server@127.0.0.1")
        .cookie("example")
        .start()
        .await?;
    client.connect(server.listen_addrs()[0]).await?;
    let timeout = Duration::from_secs(5);

    server.rpc_register("add", |(x, y): (i64, i64)| async move { x + y })?;
    server.rpc_register_with("hello", |ctx: RpcContext, name: String| async move {
        format!("hello {name}, from {}", ctx.caller_node())
    })?;
    server.rpc_register("divide", |(x, y): (i64, i64)| async move { x / y })?;
    server.rpc_register("slow", |ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    })?;
    let (tx, mut logged) = tokio::sync::mpsc::channel::<String>(8);
    server.rpc_register("log", move |line: String| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(line).await;
        }
    })?;

    let to = server.name();
    let sum: i64 = client.call(to, "add", &(40, 2), timeout).await?;
    let greeting: String = client.call(to, "hello", "client", timeout).await?;

    let unknown = client.call::<_, i64>(to, "mul", &(6, 7), timeout).await;
    assert!(matches!(unknown, Err(RpcError::UnknownName { .. })));

    // Integer division by zero panics in the handler: caught, answered as an error.
    let panicked = client.call::<_, i64>(to, "divide", &(1, 0), timeout).await;
    assert!(matches!(panicked, Err(RpcError::Panicked { .. })));
    let quotient: i64 = client.call(to, "divide", &(84, 2), timeout).await?;

    let slow = client
        .call::<_, ()>(to, "slow", &500u64, Duration::from_millis(50))
        .await;
    assert!(matches!(slow, Err(RpcError::Timeout { .. })));

    client.cast(to, "log", "a cast needs no answer").await?;
    let line = logged.recv().await.ok_or("log handler gone")?;

    // Both nodes answer "add"; the client's own call runs locally.
    client.rpc_register("add", |(x, y): (i64, i64)| async move { x + y })?;
    let both = [client.name().clone(), server.name().clone()];
    let sums = client
        .multicall::<_, i64>(&both, "add", &(1, 1), timeout)
        .await;
    assert!(sums.iter().all(|(_, r)| r == &Ok(2)));

    println!(
        "rpc: {} called {}: add = {sum}, {greeting:?}, unknown name and panic answered as \
         errors ({}), divide = {quotient} afterwards, a timeout, a cast ({line:?}), and a \
         multicall over {} nodes",
        client.name(),
        server.name(),
        panicked.unwrap_err(),
        sums.len()
    );
    client.shutdown().await;
    server.shutdown().await;
    Ok(())
}
