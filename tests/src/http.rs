//! A minimal HTTP/1.1 client over TCP for the test servers' endpoints (127.0.0.1 only): the
//! tests need a handful of JSON GETs and POSTs and a raw look at a response, not a full
//! client stack.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// An HTTP response as it came: the head (status line and headers) and the body, de-chunked.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The status line and the headers, as sent.
    pub head: String,
    /// The body.
    pub body: String,
}

/// Sends one request (`Connection: close`) and returns the status code and body.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<(u16, String)> {
    let r = exchange(addr, method, path, body)?;
    Ok((r.status, r.body))
}

/// Sends one request (`Connection: close`) and returns the whole response, for tests that
/// check the status line and headers as a client library would see them.
pub fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connect {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.map(ToString::to_string).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .context("send request")?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).context("read response")?;
    let text = String::from_utf8_lossy(&raw);
    let Some((head, rest)) = text.split_once("\r\n\r\n") else {
        bail!("malformed HTTP response from {addr}{path}");
    };
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("status line")?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_owned()
    };
    Ok(Response {
        status,
        head: head.to_owned(),
        body,
    })
}

/// GET returning JSON; fails on a non-2xx status.
pub fn get_json(addr: SocketAddr, path: &str) -> Result<serde_json::Value> {
    let (status, body) = request(addr, "GET", path, None)?;
    if !(200..300).contains(&status) {
        bail!("GET {path}: {status} {body}");
    }
    serde_json::from_str(&body).with_context(|| format!("GET {path}: not JSON: {body}"))
}

/// POST (or PUT, DELETE) a JSON body; fails on a non-2xx status; returns the body.
pub fn send_json(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &serde_json::Value,
) -> Result<String> {
    let (status, text) = request(addr, method, path, Some(body))?;
    if !(200..300).contains(&status) {
        bail!("{method} {path}: {status} {text}");
    }
    Ok(text)
}

fn dechunk(mut rest: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").context("chunk size line")?;
        let size = usize::from_str_radix(size.trim(), 16).context("chunk size")?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(after.get(..size).context("truncated chunk")?);
        rest = after.get(size + 2..).context("chunk terminator")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(
            dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap(),
            "abcde"
        );
    }
}
