//! A small blocking HTTP/1.1 client for HKube's REST API: what the hkubectl-compatible
//! commands send and receive.
//!
//! One request per connection (`Connection: close`), plain `http://` only, JSON or multipart
//! bodies, and HKube's error body (`{"error":{"message":…}}`) turned into [`Error::Api`]. It
//! knows routes only as paths relative to the API's prefix; it never decides what a command
//! prints.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// How long connecting may take before the server counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one answer may take (a large results document is read in one go).
const READ_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BadEndpoint(String),
    #[error("cannot reach the HKube API at {url} ({reason})")]
    Unreachable { url: String, reason: String },
    #[error("{method} {url}: {reason}")]
    Transport {
        method: String,
        url: String,
        reason: String,
    },
    /// The server answered with an error status; `message` is HKube's text when the body has
    /// one.
    #[error("{message}")]
    Api {
        status: u16,
        message: String,
        details: Option<Value>,
    },
}

/// Where the API is and how to authenticate.
#[derive(Debug, Clone)]
pub struct Client {
    host: String,
    port: u16,
    /// `/api/v1` or `/hkube/api-server/api/v1`: no trailing slash.
    prefix: String,
    token: Option<String>,
}

/// A successful answer.
#[derive(Debug)]
pub struct Response {
    pub body: Vec<u8>,
}

impl Response {
    /// The body as JSON (`null` when empty).
    pub fn json(&self) -> Result<Value, Error> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&self.body).map_err(|e| Error::Transport {
            method: String::new(),
            url: String::new(),
            reason: format!("the answer is not JSON: {e}"),
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One multipart form field.
#[derive(Debug)]
pub struct Part {
    pub name: String,
    pub filename: Option<String>,
    pub content: Vec<u8>,
}

impl Client {
    /// `endpoint` is `http://host[:port][/…]`; as in hkubectl, only its scheme, host and port
    /// count: the path comes from `prefix`.
    pub fn new(endpoint: &str, prefix: &str, token: Option<String>) -> Result<Client, Error> {
        let (host, port) = parse_endpoint(endpoint)?;
        Ok(Client {
            host,
            port,
            prefix: api_prefix(prefix),
            token: token.filter(|t| !t.is_empty()),
        })
    }

    /// The base URL requests go to, for messages.
    pub fn base_url(&self) -> String {
        format!("http://{}:{}{}", self.host, self.port, self.prefix)
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    pub fn get(&self, path: &str) -> Result<Response, Error> {
        self.send("GET", path, None)
    }

    pub fn delete(&self, path: &str) -> Result<Response, Error> {
        self.send("DELETE", path, None)
    }

    pub fn post_json(&self, path: &str, body: &Value) -> Result<Response, Error> {
        let body = body.to_string().into_bytes();
        self.send("POST", path, Some(("application/json".to_string(), body)))
    }

    pub fn post_multipart(&self, path: &str, parts: &[Part]) -> Result<Response, Error> {
        let boundary = boundary();
        let mut body = Vec::new();
        for part in parts {
            body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
            match &part.filename {
                Some(filename) => body.extend_from_slice(
                    format!(
                        "Content-Disposition: form-data; name=\"{}\"; filename=\"{}\"\r\nContent-Type: application/octet-stream\r\n\r\n",
                        part.name,
                        filename.replace('"', "")
                    )
                    .as_bytes(),
                ),
                None => body.extend_from_slice(
                    format!(
                        "Content-Disposition: form-data; name=\"{}\"\r\n\r\n",
                        part.name
                    )
                    .as_bytes(),
                ),
            }
            body.extend_from_slice(&part.content);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        let content_type = format!("multipart/form-data; boundary={boundary}");
        self.send("POST", path, Some((content_type, body)))
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<(String, Vec<u8>)>,
    ) -> Result<Response, Error> {
        let target = format!("{}/{}", self.prefix, path.trim_start_matches('/'));
        let url = format!("http://{}:{}{target}", self.host, self.port);
        let transport = |reason: String| Error::Transport {
            method: method.to_string(),
            url: url.clone(),
            reason,
        };
        let mut stream = self.connect()?;
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .map_err(|e| transport(e.to_string()))?;
        let mut head = format!(
            "{method} {target} HTTP/1.1\r\nHost: {}:{}\r\nConnection: close\r\nAccept: application/json\r\nUser-Agent: hkube/{}\r\n",
            self.host,
            self.port,
            env!("CARGO_PKG_VERSION")
        );
        if let Some(token) = &self.token {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        let (content_type, body) = body.unwrap_or_default();
        if !content_type.is_empty() {
            head.push_str(&format!("Content-Type: {content_type}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(&body))
            .map_err(|e| transport(format!("sending the request: {e}")))?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .map_err(|e| transport(format!("reading the answer: {e}")))?;
        let (status, body) = parse_response(&raw).map_err(transport)?;
        if (200..300).contains(&status) {
            return Ok(Response { body });
        }
        Err(api_error(status, &body, &url))
    }

    fn connect(&self) -> Result<TcpStream, Error> {
        let unreachable = |reason: String| Error::Unreachable {
            url: self.base_url(),
            reason,
        };
        let addresses = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| unreachable(e.to_string()))?;
        let mut last = String::from("no address");
        for address in addresses {
            match TcpStream::connect_timeout(&address, CONNECT_TIMEOUT) {
                Ok(stream) => return Ok(stream),
                Err(error) => last = error.to_string(),
            }
        }
        Err(unreachable(last))
    }
}

/// hkubectl's `pathPrefix` is the part before `api/v1/` (`/hkube/api-server/`); ours is the
/// whole prefix (`/api/v1`). Either form gives the whole prefix.
pub fn api_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim_matches('/');
    let whole = if trimmed == "api/v1" || trimmed.ends_with("/api/v1") {
        trimmed.to_string()
    } else if trimmed.is_empty() {
        "api/v1".to_string()
    } else {
        format!("{trimmed}/api/v1")
    };
    format!("/{whole}")
}

/// `http://host[:port][/path]` → host and port (80 when not given).
fn parse_endpoint(endpoint: &str) -> Result<(String, u16), Error> {
    let bad = |why: &str| Error::BadEndpoint(format!("endpoint {endpoint}: {why}"));
    let rest = if let Some(rest) = endpoint.strip_prefix("http://") {
        rest
    } else if endpoint.starts_with("https://") {
        return Err(bad(
            "https is not supported by this client yet; reach the API over http (for example through `kubectl port-forward`)",
        ));
    } else if endpoint.contains("://") {
        return Err(bad("expected an http:// URL"));
    } else {
        endpoint
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority.rsplit('@').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(bad("no host"));
    }
    // `[::1]:3000`, `host:3000`, `host`.
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
        (host.to_string(), after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host.to_string(), Some(port)),
            None => (authority.to_string(), None),
        }
    };
    let port = match port {
        None | Some("") => 80,
        Some(port) => port
            .parse()
            .map_err(|_| bad(&format!("port {port} is not a number")))?,
    };
    Ok((host, port))
}

fn boundary() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("hkube-{:x}-{nanos:x}", std::process::id())
}

/// Status and body of a whole HTTP/1.1 answer (Content-Length, chunked, or to the end).
fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the server closed the connection without an answer")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let rest = &raw[split + 4..];
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {status_line}"))?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            "content-length" => length = value.parse::<usize>().ok(),
            _ => {}
        }
    }
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(length) = length {
        rest.get(..length)
            .ok_or("the answer ended before its Content-Length")?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok((status, body))
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunked answer ended early")?;
        let size_text = String::from_utf8_lossy(&rest[..end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        rest = &rest[end + 2..];
        if size == 0 {
            return Ok(body);
        }
        let chunk = rest.get(..size).ok_or("a chunk ended early")?;
        body.extend_from_slice(chunk);
        rest = rest.get(size..).unwrap_or_default();
        rest = rest.strip_prefix(b"\r\n").unwrap_or(rest);
    }
}

/// HKube's error body: `{"error":{"code","message","details"}}`, or `{"error":"Unauthorized"}`.
fn api_error(status: u16, body: &[u8], url: &str) -> Error {
    let value: Option<Value> = serde_json::from_slice(body).ok();
    let error = value.as_ref().and_then(|v| v.get("error"));
    let message = match error {
        Some(Value::String(text)) => Some(text.clone()),
        Some(error) => error
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string),
        None => None,
    };
    let message = message.unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body);
        let first = text.lines().next().unwrap_or_default().trim();
        if first.is_empty() {
            format!("HTTP {status} from {url}")
        } else {
            format!("HTTP {status} from {url}: {first}")
        }
    });
    Error::Api {
        status,
        message,
        details: error.and_then(|e| e.get("details")).cloned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let check = |endpoint: &str, expected: Result<(&str, u16), &str>| {
            let got = parse_endpoint(endpoint);
            match expected {
                Ok((host, port)) => {
                    let (h, p) = got.unwrap_or_else(|e| panic!("{endpoint}: {e}"));
                    assert_eq!((h.as_str(), p), (host, port), "{endpoint}");
                }
                Err(text) => {
                    let error = got.err().map(|e| e.to_string()).unwrap_or_default();
                    assert!(error.contains(text), "{endpoint}: {error}");
                }
            }
        };
        check("http://127.0.0.1:3000", Ok(("127.0.0.1", 3000)));
        check("http://localhost:3000/api/v1", Ok(("localhost", 3000)));
        check("http://my.cluster", Ok(("my.cluster", 80)));
        check("http://[::1]:8080/", Ok(("::1", 8080)));
        check("127.0.0.1:3000", Ok(("127.0.0.1", 3000)));
        check("https://my.cluster", Err("https is not supported"));
        check("ftp://x", Err("expected an http:// URL"));
        check("http://host:port", Err("port port is not a number"));
    }

    #[test]
    fn prefixes() {
        let check = |given: &str, expected: &str| assert_eq!(api_prefix(given), expected);
        check("/api/v1", "/api/v1");
        check("api/v1/", "/api/v1");
        check("/", "/api/v1");
        check("/hkube/api-server/", "/hkube/api-server/api/v1");
        check("/hkube/api-server/api/v1", "/hkube/api-server/api/v1");
    }

    #[test]
    fn answers() {
        let check = |raw: &str, status: u16, body: &str| {
            let (s, b) = parse_response(raw.as_bytes()).unwrap_or_default();
            assert_eq!((s, String::from_utf8_lossy(&b).as_ref()), (status, body));
        };
        check(
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}trailing",
            200,
            "{}",
        );
        check(
            "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            404,
            "abcde",
        );
        check("HTTP/1.1 200 OK\r\n\r\nto the end", 200, "to the end");
    }

    #[test]
    fn error_bodies() {
        let message = |status: u16, body: &str| match api_error(status, body.as_bytes(), "u") {
            Error::Api { message, .. } => message,
            other => other.to_string(),
        };
        assert_eq!(
            message(
                404,
                r#"{"error":{"code":404,"message":"pipeline x Not Found"}}"#
            ),
            "pipeline x Not Found"
        );
        assert_eq!(message(401, r#"{"error":"Unauthorized"}"#), "Unauthorized");
        assert_eq!(
            message(502, "<html>Bad gateway</html>"),
            "HTTP 502 from u: <html>Bad gateway</html>"
        );
    }
}
