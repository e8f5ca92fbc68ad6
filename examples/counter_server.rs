//! A GenServer on one node, called from another: a counter registered as `counter` on node
//! `server`, incremented by casts and calls from node `client`, with one reply deferred to a
//! helper process. Then the server is stopped, and a last call fails with `NoProc`.
//!
//! `cargo run --example counter_server`

use std::time::Duration;

use partisan::gen_server::{self, CallResponse, Flow, GenServer};
use partisan::{CallError, ExitReason, Node, NodeBuilder, Process, ReplyTo};
use serde::{Deserialize, Serialize};

/// The counter's state.
struct Counter {
    value: i64,
}

/// Calls.
#[derive(Serialize, Deserialize)]
enum Request {
    /// Adds and answers the new value.
    Add(i64),
    /// Answers the value.
    Get,
    /// Answers the value from another process, 100 ms later.
    GetLater,
}

impl GenServer for Counter {
    type Call = Request;
    type Reply = i64;
    /// Casts add without an answer.
    type Cast = i64;

    async fn handle_call(
        &mut self,
        request: Request,
        from: ReplyTo<i64>,
        me: &mut Process,
    ) -> CallResponse<i64> {
        match request {
            Request::Add(n) => {
                self.value += n;
                CallResponse::Reply(self.value)
            }
            Request::Get => CallResponse::Reply(self.value),
            Request::GetLater => {
                let value = self.value;
                me.node().spawn(move |helper: Process| async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let _ = from.reply(&helper, &value).await;
                });
                CallResponse::NoReply
            }
        }
    }

    async fn handle_cast(&mut self, n: i64, _me: &mut Process) -> Flow {
        self.value += n;
        Flow::Continue
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = NodeBuilder::new("server@127.0.0.1")
        .cookie("example")
        .start()
        .await?;
    let client = NodeBuilder::new("client@127.0.0.1")
        .cookie("example")
        .start()
        .await?;
    client
        .join_and_wait(server.listen_addrs()[0], Duration::from_secs(10))
        .await?;

    gen_server::start_named(&server, "counter", Counter { value: 0 }).await?;
    let counter = Node::name_on(server.name(), "counter")?;
    let timeout = Duration::from_secs(5);

    let mut calls = 0;
    for n in 1..=10 {
        let _: i64 = gen_server::call(&client, &counter, &Request::Add(n), timeout).await?;
        calls += 1;
    }
    for _ in 0..5 {
        gen_server::cast(&client, &counter, &100i64).await?;
    }
    let value: i64 = gen_server::call(&client, &counter, &Request::Get, timeout).await?;
    assert_eq!(value, 55 + 500);
    let later: i64 = gen_server::call(&client, &counter, &Request::GetLater, timeout).await?;
    assert_eq!(later, value);

    gen_server::stop(&client, &counter, ExitReason::Normal, timeout).await?;
    let after: Result<i64, CallError> =
        gen_server::call(&client, &counter, &Request::Get, timeout).await;
    assert_eq!(after, Err(CallError::NoProc));

    println!(
        "counter_server: {} called a GenServer on {} ({} calls, 5 casts, 1 deferred reply) and \
         read {value}; once stopped, a call failed with NoProc",
        client.name(),
        server.name(),
        calls + 2
    );
    client.shutdown().await;
    server.shutdown().await;
    Ok(())
}
