use std::io::IoSlice;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[tokio::test]
async fn port_zero_reports_the_bound_port_and_a_dial_reaches_the_listener() {
    let mut l = TcpTransport.listen(loopback()).await.unwrap();
    let addr = l.local_addr();
    assert_eq!(addr.ip(), loopback().ip());
    assert_ne!(addr.port(), 0);
    let (dialed, accepted) = tokio::join!(TcpTransport.dial(addr), l.accept());
    let (mut a, mut b) = (dialed.unwrap(), accepted.unwrap().0);
    a.writer.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    b.reader.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    b.writer.shutdown().await.unwrap();
    assert_eq!(a.reader.read(&mut buf).await.unwrap(), 0, "end of stream");
}

#[tokio::test]
async fn writes_stay_vectored_through_the_boxed_halves() {
    let mut l = TcpTransport.listen(loopback()).await.unwrap();
    let (dialed, accepted) = tokio::join!(TcpTransport.dial(l.local_addr()), l.accept());
    let (mut a, mut b) = (dialed.unwrap(), accepted.unwrap().0);
    assert!(a.writer.is_write_vectored());
    assert!(b.writer.is_write_vectored());
    // One call carries both buffers (loopback has room for a few bytes).
    let n = a
        .writer
        .write_vectored(&[IoSlice::new(b"ab"), IoSlice::new(b"cd")])
        .await
        .unwrap();
    assert_eq!(n, 4);
    let mut buf = [0u8; 4];
    b.reader.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"abcd");
}

#[tokio::test]
async fn dialed_and_accepted_sockets_have_nodelay() {
    let l = TcpListener::bind(loopback()).await.unwrap();
    let (dialed, accepted) = tokio::join!(TcpStream::connect(l.local_addr().unwrap()), l.accept());
    for tcp in [dialed.unwrap(), accepted.unwrap().0] {
        let (_, writer) = split_nodelay(tcp).unwrap();
        assert!(writer.as_ref().nodelay().unwrap());
    }
}
