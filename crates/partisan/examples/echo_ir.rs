//! Instruction-count harness for the echo hot path (not a benchmark of wall time): two nodes
//! in one process on one current-thread runtime over loopback TCP, CALLERS caller processes
//! on one each doing ROUNDS closed-loop 64 B round trips with its own echo process on the
//! other, as `partisan bench echo --callers CALLERS` does between two processes.
//!
//! Instructions per round trip, immune to the load of a shared machine (user space only: the
//! kernel's share is not counted):
//!
//! ```sh
//! cargo build --release -p partisan --example echo_ir
//! for r in 200 1000; do
//!   valgrind --tool=callgrind --callgrind-out-file=cg.$r target/release/examples/echo_ir 64 $r
//! done
//! # (Ir of cg.1000 - Ir of cg.200) / (64 * 800); `callgrind_annotate cg.1000` shows where.
//! ```
use bytes::Bytes;
use partisan::{ChannelName, Envelope, NodeBuilder, SendOptions};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let (callers, rounds) = (args[0], args[1]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let a = NodeBuilder::new("bench_driver@127.0.0.1")
            .listen("127.0.0.1:0")
            .cookie("c")
            .start()
            .await
            .unwrap();
        let b = NodeBuilder::new("bench_peer@127.0.0.1")
            .listen("127.0.0.1:0")
            .cookie("c")
            .start()
            .await
            .unwrap();
        a.connect(b.listen_addrs()[0]).await.unwrap();
        let opts = SendOptions::default();
        let mut tasks = Vec::new();
        for _ in 0..callers {
            // Each echo process names its channel itself, as the bench's peer does.
            let o = SendOptions::on(&ChannelName::new(ChannelName::DEFAULT).unwrap());
            let echo = b.spawn(move |mut p| async move {
                let mut buf = Vec::with_capacity(64);
                while p.recv_many(&mut buf, 64).await > 0 {
                    for Envelope { from, payload, .. } in buf.drain(..) {
                        if let Some(from) = from {
                            if p.send(&from, payload, &o).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
            let mut p = a.process();
            let o = opts.clone();
            let payload = Bytes::from(vec![0x5au8; 64]);
            tasks.push(tokio::spawn(async move {
                for _ in 0..rounds {
                    p.send(&echo, payload.clone(), &o).await.unwrap();
                    p.recv().await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        a.shutdown().await;
        b.shutdown().await;
    });
}
