//! `partisan node --admin`: a tiny HTTP endpoint serving the node's status and its replicated
//! key-value map.
//!
//! - `GET /status` (and `GET /`): the node's status as JSON (indented with `?pretty`).
//! - `PUT /kv/KEY` (body: the value): sets KEY, broadcast to the cluster; 204.
//! - `GET /kv/KEY`: the value as raw bytes (`application/octet-stream`); 404 if absent.
//! - `DELETE /kv/KEY`: deletes KEY (a tombstone, broadcast); 204.
//! - `GET /kv`: every key and value on this node as one JSON object, in key order; a value
//!   that is UTF-8 is a JSON string, any other is `{"base64": "..."}` (standard alphabet,
//!   padded).
//!
//! KEY is the rest of the path, percent-decoded, and must be 1 to 1024 bytes of UTF-8; a query
//! string is ignored. Bodies are at most 1 MiB (the map's value limit) and must come with
//! `Content-Length` (411 otherwise, 413 if larger); `Expect: 100-continue` is honoured. Errors
//! are JSON `{"error": "..."}`: 400 for a bad key or request, 404 for an unknown path or key,
//! 405 for a method a path does not serve, 503 when the node is shutting down. Headers are
//! read up to 8 KiB and 5 seconds, a body within 10 seconds more; one task per connection,
//! closed after the answer.

use std::net::SocketAddr;
use std::time::Duration;

use partisan::partisan_core::broadcast::kv_map::MAX_VALUE_LEN;
use partisan::{KvError, Node};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest request head (request line and headers).
const MAX_HEAD: usize = 8192;
/// Largest request body: the replicated map's value limit.
const MAX_BODY: usize = MAX_VALUE_LEN;

/// Binds `addr` (before the node starts, so that a busy port is found first).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `node` on `listener` in the background; returns the bound address.
pub fn serve(node: Node, listener: TcpListener) -> std::io::Result<SocketAddr> {
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let node = node.clone();
            tokio::spawn(async move {
                if let Err(e) = answer(node, stream).await {
                    tracing::debug!(error = %e, "admin request failed");
                }
            });
        }
    });
    Ok(bound)
}

/// One answer: status line, content type, body.
struct Response {
    status: &'static str,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Response {
    fn json(status: &'static str, body: String) -> Self {
        Response {
            status,
            content_type: "application/json",
            body: body.into_bytes(),
        }
    }

    fn error(status: &'static str, msg: &str) -> Self {
        Self::json(status, serde_json::json!({ "error": msg }).to_string())
    }

    fn no_content() -> Self {
        Response {
            status: "204 No Content",
            content_type: "application/json",
            body: Vec::new(),
        }
    }
}

/// The parts of a request head the server looks at.
struct Head {
    method: String,
    path: String,
    /// `?pretty` (or `&pretty`) in the query string.
    pretty: bool,
    content_length: Option<usize>,
    chunked: bool,
    expect_continue: bool,
}

fn parse_head(head: &str) -> Result<Head, String> {
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or("");
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err("malformed request line".into());
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let pretty = query
        .split('&')
        .any(|p| p == "pretty" || p == "pretty=1" || p == "pretty=true");
    let mut h = Head {
        method: method.to_string(),
        path: path.to_string(),
        pretty,
        content_length: None,
        chunked: false,
        expect_continue: false,
    };
    for l in lines {
        let Some((name, value)) = l.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                let n = value
                    .parse()
                    .map_err(|_| format!("bad content-length {value:?}"))?;
                h.content_length = Some(n);
            }
            "transfer-encoding" => h.chunked = true,
            "expect" => h.expect_continue = value.eq_ignore_ascii_case("100-continue"),
            _ => {}
        }
    }
    Ok(h)
}

async fn answer(node: Node, mut stream: TcpStream) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let read_head = async {
        let mut chunk = [0u8; 1024];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return Ok::<_, std::io::Error>(Some(end));
            }
            if buf.len() >= MAX_HEAD {
                return Ok(None);
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    let end = tokio::time::timeout(Duration::from_secs(5), read_head)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let response = match end {
        None => Response::error("400 Bad Request", "request head incomplete or over 8 KiB"),
        Some(end) => {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let rest = buf[end + 4..].to_vec();
            match parse_head(&head) {
                Err(e) => Response::error("400 Bad Request", &e),
                Ok(h) => match read_body(&mut stream, &h, rest).await? {
                    Err(r) => r,
                    Ok(body) => route(&node, &h, body).await,
                },
            }
        }
    };
    let head = format!(
        "HTTP/1.1 {}\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&response.body).await?;
    stream.shutdown().await
}

/// Reads the body `h` announces (`rest`: what came after the head already); `Err` is the
/// answer to a body that is refused.
async fn read_body(
    stream: &mut TcpStream,
    h: &Head,
    mut rest: Vec<u8>,
) -> std::io::Result<Result<Vec<u8>, Response>> {
    if h.chunked {
        return Ok(Err(Response::error(
            "411 Length Required",
            "send the body with Content-Length (chunked transfer is not supported)",
        )));
    }
    let len = h.content_length.unwrap_or(0);
    if len > MAX_BODY {
        return Ok(Err(Response::error(
            "413 Payload Too Large",
            &format!("body of {len} bytes; at most {MAX_BODY} allowed"),
        )));
    }
    if len > rest.len() && h.expect_continue {
        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }
    let read = async {
        let mut chunk = vec![0u8; 64 * 1024];
        while rest.len() < len {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            rest.extend_from_slice(&chunk[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    if rest.len() < len {
        return Ok(Err(Response::error(
            "400 Bad Request",
            "body shorter than its content-length",
        )));
    }
    rest.truncate(len);
    Ok(Ok(rest))
}

async fn route(node: &Node, h: &Head, body: Vec<u8>) -> Response {
    let method = h.method.as_str();
    match h.path.as_str() {
        "/status" | "/" => match method {
            "GET" => {
                let status = node.status();
                let text = if h.pretty {
                    serde_json::to_string_pretty(&status)
                } else {
                    serde_json::to_string(&status)
                };
                Response::json("200 OK", text.unwrap_or_else(|_| "{}".into()))
            }
            _ => Response::error("405 Method Not Allowed", "only GET"),
        },
        "/kv" | "/kv/" => match method {
            "GET" => match node.kv().entries().await {
                Ok(entries) => Response::json("200 OK", entries_json(&entries)),
                Err(e) => kv_error(e),
            },
            _ => Response::error("405 Method Not Allowed", "only GET on /kv"),
        },
        p => match p.strip_prefix("/kv/") {
            Some(raw) => {
                let key = match percent_decode(raw) {
                    Ok(k) => k,
                    Err(e) => return Response::error("400 Bad Request", &e),
                };
                kv_key(node, method, &key, body).await
            }
            None => Response::error("404 Not Found", "not found"),
        },
    }
}

async fn kv_key(node: &Node, method: &str, key: &str, body: Vec<u8>) -> Response {
    let kv = node.kv();
    match method {
        "GET" => match kv.get(key).await {
            Ok(Some(v)) => Response {
                status: "200 OK",
                content_type: "application/octet-stream",
                body: v,
            },
            Ok(None) => Response::error("404 Not Found", "no such key"),
            Err(e) => kv_error(e),
        },
        "PUT" => match kv.put(key, &body).await {
            Ok(()) => Response::no_content(),
            Err(e) => kv_error(e),
        },
        "DELETE" => match kv.delete(key).await {
            Ok(()) => Response::no_content(),
            Err(e) => kv_error(e),
        },
        _ => Response::error(
            "405 Method Not Allowed",
            "only GET, PUT or DELETE on /kv/KEY",
        ),
    }
}

fn kv_error(e: KvError) -> Response {
    let status = match e {
        KvError::InvalidKey(_) | KvError::InvalidValue(_) => "400 Bad Request",
        KvError::ShuttingDown => "503 Service Unavailable",
        KvError::NotRegistered(_) | KvError::Broadcast(_) => "500 Internal Server Error",
    };
    Response::error(status, &e.to_string())
}

/// The map as one JSON object: UTF-8 values as strings, others as `{"base64": ...}`.
fn entries_json(entries: &[(String, Vec<u8>)]) -> String {
    let mut map = serde_json::Map::new();
    for (k, v) in entries {
        let value = match std::str::from_utf8(v) {
            Ok(s) => serde_json::Value::String(s.to_string()),
            Err(_) => serde_json::json!({ "base64": base64(v) }),
        };
        map.insert(k.clone(), value);
    }
    serde_json::Value::Object(map).to_string()
}

/// Decodes `%XX` escapes; the result must be UTF-8.
fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| "bad percent escape in key".to_string())?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "key is not UTF-8 once percent-decoded".to_string())
}

/// Standard base64 with padding.
fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(c.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(c.get(2).copied().unwrap_or(0));
        for (j, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if j <= c.len() {
                out.push(A[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
        assert_eq!(base64(&[0xff, 0xfe]), "//4=");
    }

    #[test]
    fn keys_are_percent_decoded_and_must_be_utf8() {
        assert_eq!(percent_decode("a%20b%2Fc").unwrap(), "a b/c");
        assert_eq!(percent_decode("caf%C3%A9").unwrap(), "café");
        assert!(percent_decode("bad%2").is_err());
        assert!(percent_decode("bad%zz").is_err());
        assert!(percent_decode("%ff").unwrap_err().contains("UTF-8"));
    }

    #[test]
    fn entries_are_strings_or_base64() {
        let j = entries_json(&[("a".into(), b"text".to_vec()), ("b".into(), vec![0xff, 0])]);
        assert_eq!(j, r#"{"a":"text","b":{"base64":"/wA="}}"#);
    }

    #[test]
    fn heads_are_parsed() {
        let h = parse_head(
            "PUT /kv/x?y=1 HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\nHost: z",
        )
        .unwrap();
        assert_eq!((h.method.as_str(), h.path.as_str()), ("PUT", "/kv/x"));
        assert_eq!(h.content_length, Some(5));
        assert!(h.expect_continue && !h.chunked && !h.pretty);
        let h = parse_head("GET /status?x=1&pretty HTTP/1.1\r\n").unwrap();
        assert_eq!((h.path.as_str(), h.pretty), ("/status", true));
        assert!(parse_head("GET\r\n").is_err());
        assert!(parse_head("PUT /kv/x HTTP/1.1\r\ncontent-length: x").is_err());
    }
}
