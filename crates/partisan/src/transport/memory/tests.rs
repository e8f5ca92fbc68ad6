use std::collections::BTreeSet;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A connected pair on `net`: (the dialer's end, the acceptor's end).
async fn pair(net: &MemoryTransport) -> (Stream, Stream) {
    let mut l = net.listen(addr("127.0.0.1:0")).await.unwrap();
    let dialed = net.dial(l.local_addr()).await.unwrap();
    let (accepted, from) = l.accept().await.unwrap();
    assert_eq!(from.ip(), IpAddr::from(DIALERS));
    (dialed, accepted)
}

#[tokio::test]
async fn port_zero_picks_fresh_ports_never_reused() {
    let net = MemoryTransport::new();
    let mut seen = BTreeSet::new();
    for ip in ["127.0.0.1", "127.0.0.2", "127.0.0.1"] {
        let l = net.listen(addr(&format!("{ip}:0"))).await.unwrap();
        let bound = l.local_addr();
        assert_eq!(bound.ip().to_string(), ip);
        assert!(bound.port() >= FIRST_EPHEMERAL);
        assert!(
            seen.insert(bound.port()),
            "port {} handed out twice",
            bound.port()
        );
        drop(l);
    }
    // A port bound explicitly is not handed out for port 0 later, even once released.
    let next = FIRST_EPHEMERAL + seen.len() as u16;
    drop(
        net.listen(SocketAddr::new(addr("127.0.0.9:0").ip(), next))
            .await
            .unwrap(),
    );
    let l = net.listen(addr("127.0.0.1:0")).await.unwrap();
    assert_eq!(l.local_addr().port(), next + 1);
}

#[tokio::test]
async fn a_bound_address_is_in_use_until_its_listener_is_dropped() {
    let net = MemoryTransport::new();
    let a = addr("127.0.0.1:4000");
    let l = net.listen(a).await.unwrap();
    assert_eq!(l.local_addr(), a);
    let err = net.listen(a).await.err().unwrap();
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    // The unspecified IP conflicts with every IP on the port, both ways.
    let err = net.listen(addr("0.0.0.0:4000")).await.err().unwrap();
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    // Another IP, or another port, is free.
    net.listen(addr("127.0.0.2:4000")).await.unwrap();
    net.listen(addr("127.0.0.1:4001")).await.unwrap();
    drop(l);
    net.listen(a).await.unwrap();
}

#[tokio::test]
async fn dialing_an_address_nobody_listens_on_is_refused_at_once() {
    let net = MemoryTransport::new();
    let err = net.dial(addr("127.0.0.1:4000")).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    // Not even a listener on another IP of that port answers.
    let _l = net.listen(addr("127.0.0.2:4000")).await.unwrap();
    let err = net.dial(addr("127.0.0.1:4000")).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
}

#[tokio::test]
async fn a_listener_on_the_unspecified_ip_receives_dials_to_any_ip() {
    let net = MemoryTransport::new();
    let mut l = net.listen(addr("0.0.0.0:4000")).await.unwrap();
    let mut s = net.dial(addr("127.0.0.5:4000")).await.unwrap();
    s.writer.write_all(b"x").await.unwrap();
    let (mut accepted, _) = l.accept().await.unwrap();
    assert_eq!(accepted.reader.read_u8().await.unwrap(), b'x');
}

#[tokio::test]
async fn dropping_a_listener_unbinds_its_address_and_drops_unaccepted_connections() {
    let net = MemoryTransport::new();
    let l = net.listen(addr("127.0.0.1:0")).await.unwrap();
    let a = l.local_addr();
    let mut waiting = net.dial(a).await.unwrap();
    drop(l);
    let mut buf = [0u8; 8];
    assert_eq!(waiting.reader.read(&mut buf).await.unwrap(), 0);
    let err = net.dial(a).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
}

#[tokio::test]
async fn bytes_flow_both_ways_in_order() {
    let net = MemoryTransport::new();
    let (mut d, mut a) = pair(&net).await;
    d.writer.write_all(b"hello ").await.unwrap();
    d.writer.write_all(b"world").await.unwrap();
    a.writer.write_all(b"back").await.unwrap();
    let mut buf = [0u8; 11];
    a.reader.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello world");
    let mut buf = [0u8; 4];
    d.reader.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"back");
}

#[tokio::test]
async fn shutting_down_or_dropping_a_writer_gives_end_of_stream_after_the_data() {
    let net = MemoryTransport::new();
    let (mut d, mut a) = pair(&net).await;
    d.writer.write_all(b"last").await.unwrap();
    d.writer.shutdown().await.unwrap();
    let mut got = Vec::new();
    a.reader.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"last");
    // The other direction is still open; dropping its writer (not shutting it down) closes it.
    a.writer.write_all(b"reply").await.unwrap();
    drop(a.writer);
    let mut got = Vec::new();
    d.reader.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"reply");
}

#[tokio::test]
async fn dropping_a_reader_makes_the_peers_writes_fail() {
    let net = MemoryTransport::new();
    let (d, mut a) = pair(&net).await;
    drop(d.reader);
    let err = a.writer.write_all(b"anyone?").await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    // The other direction is unaffected.
    let mut writer = d.writer;
    writer.write_all(b"still").await.unwrap();
    let mut buf = [0u8; 5];
    a.reader.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"still");
}

#[tokio::test(start_paused = true)]
async fn a_writer_waits_when_its_peer_does_not_read() {
    let net = MemoryTransport::new();
    let (mut d, mut a) = pair(&net).await;
    let block = vec![7u8; 64 * 1024];
    let mut written = 0usize;
    // Writes go through until the pipe is full, then wait (an hour of paused time passes).
    loop {
        match tokio::time::timeout(Duration::from_secs(3600), d.writer.write(&block)).await {
            Ok(n) => written += n.unwrap(),
            Err(_) => break,
        }
        assert!(written <= PIPE_BYTES, "buffered {written} bytes");
    }
    assert_eq!(written, PIPE_BYTES);
    // Reading makes room again.
    let mut sink = vec![0u8; 100 * 1024];
    a.reader.read_exact(&mut sink).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(1), d.writer.write(&block))
        .await
        .expect("room after a read")
        .unwrap();
    assert!(n > 0);
}

#[tokio::test]
async fn instances_are_isolated_and_clones_share_one_network() {
    let net = MemoryTransport::new();
    let l = net.listen(addr("127.0.0.1:4000")).await.unwrap();
    let err = MemoryTransport::new()
        .dial(l.local_addr())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    // The other network may bind the same address.
    MemoryTransport::new().listen(l.local_addr()).await.unwrap();
    net.clone().dial(l.local_addr()).await.unwrap();
}

#[tokio::test]
async fn writes_can_be_vectored() {
    let net = MemoryTransport::new();
    let (mut d, mut a) = pair(&net).await;
    let bufs = [std::io::IoSlice::new(b"ab"), std::io::IoSlice::new(b"cd")];
    assert_eq!(d.writer.write_vectored(&bufs).await.unwrap(), 4);
    let mut buf = [0u8; 4];
    a.reader.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"abcd");
}
