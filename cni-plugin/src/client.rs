//! A blocking HTTP/1.1 client for the node-agent's unix socket, on std only: the plugin runs
//! once per pod, so a runtime like tokio would cost start-up time and binary size for nothing
//! (design/dependencies.md). One request per connection (`Connection: close`), and one deadline
//! covering connect, write and read so a stuck agent cannot stall kubelet.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use std::{fmt, thread};

use hostnic_agent_api::ApiError;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest response the plugin reads; a bigger one is a broken agent.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Why a request to the agent failed.
#[derive(Debug)]
pub enum ClientError {
    /// The socket does not exist or refuses connections: the agent is not running.
    Connect {
        /// Socket path tried.
        socket: PathBuf,
        /// What connect said.
        source: io::Error,
    },
    /// No complete answer within the deadline.
    Timeout {
        /// The deadline in seconds.
        secs: u64,
    },
    /// Reading or writing the connection failed.
    Io(io::Error),
    /// The agent answered something that is not the protocol.
    BadResponse(String),
    /// The agent answered with an error.
    Api {
        /// HTTP status.
        status: u16,
        /// The agent's error body.
        error: ApiError,
    },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Connect { socket, source } => write!(
                f,
                "cannot reach hostnic-agent at {}: {source}; is the agent running on this node \
                 (and does the config's \"socket\" name its socket)?",
                socket.display()
            ),
            ClientError::Timeout { secs } => write!(
                f,
                "hostnic-agent did not answer within {secs}s (config \"timeoutSeconds\")"
            ),
            ClientError::Io(e) => write!(f, "talking to hostnic-agent failed: {e}"),
            ClientError::BadResponse(m) => write!(f, "hostnic-agent sent a bad response: {m}"),
            ClientError::Api { status, error } => {
                write!(f, "hostnic-agent answered {status}: {}", error.message)
            }
        }
    }
}

impl ClientError {
    /// Whether the agent may have acted on the request although the plugin saw no answer.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            ClientError::Timeout { .. } | ClientError::Io(_) | ClientError::BadResponse(_)
        )
    }
}

/// The agent's socket and the deadline of each request.
#[derive(Clone, Debug)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

impl Client {
    /// A client of the agent listening on `socket`.
    pub fn new(socket: &Path, timeout: Duration) -> Self {
        Self {
            socket: socket.to_path_buf(),
            timeout,
        }
    }

    /// This client's deadline per request.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The same agent with another deadline.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self {
            socket: self.socket.clone(),
            timeout,
        }
    }

    /// `POST path` with a JSON body; decodes the JSON answer.
    pub fn post<B: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<R, ClientError> {
        let body = serde_json::to_vec(body)
            .map_err(|e| ClientError::BadResponse(format!("encode request: {e}")))?;
        self.call("POST", path, Some(&body))
    }

    /// `GET path`; decodes the JSON answer.
    pub fn get<R: DeserializeOwned>(&self, path: &str) -> Result<R, ClientError> {
        self.call("GET", path, None)
    }

    fn call<R: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<R, ClientError> {
        let deadline = Instant::now() + self.timeout;
        let mut stream = self.connect(deadline)?;
        let request = encode_request(method, path, body);
        self.with_deadline(&stream, deadline)?;
        stream.write_all(&request).map_err(|e| self.io(e))?;
        let raw = self.read_response(&mut stream, deadline)?;
        let (status, body) = parse_response(&raw).map_err(ClientError::BadResponse)?;
        if (200..300).contains(&status) {
            serde_json::from_slice(&body)
                .map_err(|e| ClientError::BadResponse(format!("decode {path} answer: {e}")))
        } else {
            let error = serde_json::from_slice::<ApiError>(&body).map_err(|_| {
                ClientError::BadResponse(format!(
                    "{method} {path}: status {status} with body {:?}",
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                ))
            })?;
            Err(ClientError::Api { status, error })
        }
    }

    /// std has no connect timeout for unix sockets, and connect can block when the agent's
    /// accept backlog is full; a helper thread bounds it.
    fn connect(&self, deadline: Instant) -> Result<UnixStream, ClientError> {
        let (tx, rx) = mpsc::channel();
        let socket = self.socket.clone();
        thread::spawn(move || {
            // The receiver may be gone after a timeout; nothing to do then.
            let _ = tx.send(UnixStream::connect(&socket));
        });
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(source)) => Err(ClientError::Connect {
                socket: self.socket.clone(),
                source,
            }),
            Err(_) => Err(self.timeout_error()),
        }
    }

    fn read_response(
        &self,
        stream: &mut UnixStream,
        deadline: Instant,
    ) -> Result<Vec<u8>, ClientError> {
        let mut raw = Vec::with_capacity(4096);
        let mut buf = [0u8; 8192];
        loop {
            if let Some(len) = complete_len(&raw).map_err(ClientError::BadResponse)? {
                raw.truncate(len);
                return Ok(raw);
            }
            self.with_deadline(stream, deadline)?;
            let n = stream.read(&mut buf).map_err(|e| self.io(e))?;
            if n == 0 {
                // Connection closed: the response ends here (HTTP/1.1 without a length).
                return Ok(raw);
            }
            raw.extend_from_slice(&buf[..n]);
            if raw.len() > MAX_RESPONSE_BYTES {
                return Err(ClientError::BadResponse(format!(
                    "response larger than {MAX_RESPONSE_BYTES} bytes"
                )));
            }
        }
    }

    fn with_deadline(&self, stream: &UnixStream, deadline: Instant) -> Result<(), ClientError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(self.timeout_error());
        }
        stream
            .set_read_timeout(Some(left))
            .and_then(|()| stream.set_write_timeout(Some(left)))
            .map_err(ClientError::Io)
    }

    fn io(&self, e: io::Error) -> ClientError {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => self.timeout_error(),
            _ => ClientError::Io(e),
        }
    }

    fn timeout_error(&self) -> ClientError {
        ClientError::Timeout {
            secs: self.timeout.as_secs_f64().ceil() as u64,
        }
    }
}

fn encode_request(method: &str, path: &str, body: Option<&[u8]>) -> Vec<u8> {
    let body = body.unwrap_or_default();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: hostnic-agent\r\nUser-Agent: hostnic-cni/{}\r\n\
         Accept: application/json\r\nConnection: close\r\n",
        env!("CARGO_PKG_VERSION")
    );
    if method != "GET" {
        req.push_str("Content-Type: application/json\r\n");
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Parsed head of a response.
struct Head {
    status: u16,
    body_start: usize,
    framing: Framing,
}

enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

fn parse_head(raw: &[u8]) -> Result<Option<Head>, String> {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "response head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let (Some(proto), Some(code)) = (parts.next(), parts.next()) else {
        return Err(format!("bad status line {status_line:?}"));
    };
    if !proto.starts_with("HTTP/1.") {
        return Err(format!("bad status line {status_line:?}"));
    }
    let status = code
        .parse::<u16>()
        .map_err(|_| format!("bad status line {status_line:?}"))?;
    let mut framing = Framing::UntilClose;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let len = value
                .parse()
                .map_err(|_| format!("bad Content-Length {value:?}"))?;
            framing = Framing::Length(len);
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            framing = Framing::Chunked;
        }
    }
    Ok(Some(Head {
        status,
        body_start: end + 4,
        framing,
    }))
}

/// Length of the complete response in `raw`, once it is all there.
fn complete_len(raw: &[u8]) -> Result<Option<usize>, String> {
    let Some(head) = parse_head(raw)? else {
        return Ok(None);
    };
    match head.framing {
        Framing::Length(len) => {
            let total = head.body_start + len;
            Ok((raw.len() >= total).then_some(total))
        }
        Framing::Chunked => {
            Ok(dechunk(&raw[head.body_start..])?.map(|(_, used)| head.body_start + used))
        }
        Framing::UntilClose => Ok(None),
    }
}

/// Decodes a chunked body; `None` while incomplete, else the body and the bytes consumed.
fn dechunk(mut data: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let start_len = data.len();
    let mut body = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size_field = std::str::from_utf8(&data[..eol]).map_err(|_| "bad chunk size")?;
        let size_hex = size_field.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| format!("bad chunk size {size_hex:?}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            // Trailers (none expected) end with an empty line.
            let Some(end) = data.windows(2).position(|w| w == b"\r\n") else {
                return Ok(None);
            };
            let used = start_len - data.len() + end + 2;
            return Ok(Some((body, used)));
        }
        if data.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Status and body of a complete response.
fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let head = parse_head(raw)?.ok_or("connection closed before a complete response head")?;
    let rest = &raw[head.body_start..];
    let body = match head.framing {
        Framing::Length(len) => rest
            .get(..len)
            .ok_or("connection closed before the whole body arrived")?
            .to_vec(),
        Framing::Chunked => {
            dechunk(rest)?
                .ok_or("connection closed inside a chunked body")?
                .0
        }
        Framing::UntilClose => rest.to_vec(),
    };
    Ok((head.status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_length_responses() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}extra";
        assert_eq!(complete_len(raw).unwrap(), Some(raw.len() - 5));
        assert_eq!(parse_response(raw).unwrap(), (200, b"{}".to_vec()));
        assert_eq!(
            complete_len(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}").unwrap(),
            None
        );
    }

    #[test]
    fn parses_chunked_responses() {
        let raw = b"HTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n3\r\n\":1\r\n1\r\n}\r\n0\r\n\r\n";
        assert_eq!(complete_len(raw).unwrap(), Some(raw.len()));
        assert_eq!(parse_response(raw).unwrap(), (503, b"{\"a\":1}".to_vec()));
        assert_eq!(complete_len(&raw[..raw.len() - 2]).unwrap(), None);
    }

    #[test]
    fn body_until_close_and_garbage() {
        assert_eq!(
            parse_response(b"HTTP/1.0 200 OK\r\n\r\n[1]").unwrap(),
            (200, b"[1]".to_vec())
        );
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200").is_err());
        assert!(complete_len(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
    }

    #[test]
    fn get_requests_have_no_body_headers() {
        let req = String::from_utf8(encode_request("GET", "/v1/status", None)).unwrap();
        assert!(req.starts_with("GET /v1/status HTTP/1.1\r\n"));
        assert!(!req.contains("Content-Length"));
        let req = String::from_utf8(encode_request("POST", "/v1/gc", Some(b"{}"))).unwrap();
        assert!(req.ends_with("Content-Length: 2\r\n\r\n{}"), "{req}");
    }
}
