//! The blocking HTTP client for HKube's REST API: what the hkubectl-compatible commands send
//! and receive.
//!
//! `ureq` does the HTTP (http and https; rustls with the system's roots, `SSL_CERT_FILE`
//! honoured, and the proxy variables). This module adds what is HKube's: routes as paths
//! under the API's prefix, the bearer token, JSON or multipart bodies, and HKube's error body
//! (`{"error":{"message":…}}`) turned into [`Error::Api`]. It never decides what a command
//! prints.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use ureq::http::uri::Authority;
use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};

/// How long connecting may take before the server counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an answer may take to start, and then to arrive (a large results document).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(300);

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
    agent: ureq::Agent,
    /// `https://host:port`: scheme and authority, no path.
    origin: String,
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
    /// `endpoint` is `http[s]://host[:port][/…]`; as in hkubectl, only its scheme, host and
    /// port count: the path comes from `prefix`. `verify_tls: false` is hkubectl's
    /// `rejectUnauthorized: false` (a self-signed certificate is accepted).
    pub fn new(
        endpoint: &str,
        prefix: &str,
        token: Option<String>,
        verify_tls: bool,
    ) -> Result<Client, Error> {
        let origin = parse_endpoint(endpoint)?;
        let mut tls = TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .unversioned_rustls_crypto_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .disable_verification(!verify_tls);
        if origin.starts_with("https://") && verify_tls {
            tls = tls.root_certs(system_roots());
        }
        let agent = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_recv_response(Some(ANSWER_TIMEOUT))
            .timeout_recv_body(Some(ANSWER_TIMEOUT))
            // Error statuses carry HKube's message in the body: read, not raised.
            .http_status_as_error(false)
            .user_agent(format!("hkube/{}", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Ok(Client {
            agent,
            origin,
            prefix: api_prefix(prefix),
            token: token.filter(|t| !t.is_empty()),
        })
    }

    /// The base URL requests go to, for messages.
    pub fn base_url(&self) -> String {
        format!("{}{}", self.origin, self.prefix)
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    pub fn get(&self, path: &str) -> Result<Response, Error> {
        self.send("GET", path, None)
    }

    /// A GET whose answer is copied to `out` as it arrives, however long it lasts (a followed
    /// log): no timeout once the answer has begun.
    pub fn get_streamed(&self, path: &str, out: &mut dyn std::io::Write) -> Result<(), Error> {
        let url = format!(
            "{}{}/{}",
            self.origin,
            self.prefix,
            path.trim_start_matches('/')
        );
        let transport = |reason: String| Error::Transport {
            method: "GET".to_string(),
            url: url.clone(),
            reason,
        };
        let request = ureq::http::Request::builder().method("GET").uri(&url);
        let request = match &self.token {
            Some(token) => request.header("Authorization", format!("Bearer {token}")),
            None => request,
        };
        let request = request.body(()).map_err(|e| transport(e.to_string()))?;
        let request = self
            .agent
            .configure_request(request)
            .timeout_recv_body(None)
            .build();
        let mut response = self
            .agent
            .run(request)
            .map_err(|e| self.failure("GET", &url, e))?;
        let status = response.status().as_u16();
        let mut reader = response.body_mut().with_config().limit(u64::MAX).reader();
        if !(200..300).contains(&status) {
            let mut body = Vec::new();
            std::io::Read::read_to_end(&mut reader, &mut body)
                .map_err(|e| transport(format!("reading the answer: {e}")))?;
            return Err(api_error(status, &body, &url));
        }
        let mut chunk = [0u8; 8192];
        loop {
            let read = std::io::Read::read(&mut reader, &mut chunk)
                .map_err(|e| transport(format!("reading the answer: {e}")))?;
            if read == 0 {
                return Ok(());
            }
            out.write_all(&chunk[..read])
                .and_then(|()| out.flush())
                .map_err(|e| transport(format!("writing the answer: {e}")))?;
        }
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
        let url = format!(
            "{}{}/{}",
            self.origin,
            self.prefix,
            path.trim_start_matches('/')
        );
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("Accept", "application/json");
        let request = match &self.token {
            Some(token) => request.header("Authorization", format!("Bearer {token}")),
            None => request,
        };
        let (content_type, body) = body.unwrap_or_default();
        let request = if content_type.is_empty() {
            request
        } else {
            request.header("Content-Type", content_type)
        };
        let request = request.body(body).map_err(|e| Error::Transport {
            method: method.to_string(),
            url: url.clone(),
            reason: e.to_string(),
        })?;
        let mut response = self
            .agent
            .run(request)
            .map_err(|e| self.failure(method, &url, e))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_vec()
            .map_err(|e| Error::Transport {
                method: method.to_string(),
                url: url.clone(),
                reason: format!("reading the answer: {e}"),
            })?;
        if (200..300).contains(&status) {
            return Ok(Response { body });
        }
        Err(api_error(status, &body, &url))
    }

    /// A request that got no answer: unreachable (nothing listens, no such host), or
    /// broken on the way (TLS, a reset), with a hint for a certificate the roots lack.
    fn failure(&self, method: &str, url: &str, error: ureq::Error) -> Error {
        use std::io::ErrorKind;
        let unreachable = match &error {
            ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => true,
            ureq::Error::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve) => true,
            ureq::Error::Io(io) => {
                matches!(
                    io.kind(),
                    ErrorKind::ConnectionRefused
                        | ErrorKind::AddrNotAvailable
                        | ErrorKind::NotFound
                ) || io.to_string().contains("failed to lookup address")
            }
            _ => false,
        };
        // ureq says "io: …" before a system error; the system's words are enough.
        let mut reason = match &error {
            ureq::Error::Io(io) => io.to_string(),
            other => other.to_string(),
        };
        if unreachable {
            return Error::Unreachable {
                url: self.base_url(),
                reason,
            };
        }
        // rustls' verdict arrives as ureq's Rustls or Io error, depending on when it came.
        if reason.contains("certificate") {
            reason.push_str(
                "; if the server's certificate comes from your own CA, point SSL_CERT_FILE at it, or set \"rejectUnauthorized\": false in .hkuberc",
            );
        }
        Error::Transport {
            method: method.to_string(),
            url: url.to_string(),
            reason,
        }
    }
}

/// The system's trusted certificates (or `SSL_CERT_FILE`'s); Mozilla's list is not bundled,
/// so an in-house CA the machine trusts works as it does for curl.
fn system_roots() -> RootCerts {
    let found = rustls_native_certs::load_native_certs();
    let certs: Vec<Certificate<'static>> = found
        .certs
        .iter()
        .map(|der| Certificate::from_der(der.as_ref()).to_owned())
        .collect();
    RootCerts::new_with_certs(&certs)
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

/// `http[s]://host[:port][/path]` → `http[s]://host:port` (port 80 or 443 when not given; no
/// scheme means http, as hkubectl's default endpoint has it).
fn parse_endpoint(endpoint: &str) -> Result<String, Error> {
    let bad = |why: &str| Error::BadEndpoint(format!("endpoint {endpoint}: {why}"));
    let (scheme, rest) = match endpoint.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => ("http", rest),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => ("https", rest),
        Some(_) => return Err(bad("expected an http:// or https:// URL")),
        None => ("http", endpoint),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority.rsplit('@').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(bad("no host"));
    }
    let parsed: Authority = authority
        .parse()
        .map_err(|_| bad("expected host or host:port"))?;
    // `http` takes `host:port` with a port that is not a number as no port at all.
    let after_host = authority.rsplit(']').next().unwrap_or_default();
    let port = match after_host.split_once(':') {
        None | Some((_, "")) => {
            if scheme == "https" {
                443
            } else {
                80
            }
        }
        Some((_, port)) => port
            .parse::<u16>()
            .map_err(|_| bad(&format!("port {port} is not a number")))?,
    };
    Ok(format!("{scheme}://{}:{port}", parsed.host()))
}

fn boundary() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("hkube-{:x}-{nanos:x}", std::process::id())
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
        let check = |endpoint: &str, expected: Result<&str, &str>| {
            let got = parse_endpoint(endpoint);
            match expected {
                Ok(origin) => {
                    let got = got.unwrap_or_else(|e| panic!("{endpoint}: {e}"));
                    assert_eq!(got, origin, "{endpoint}");
                }
                Err(text) => {
                    let error = got.err().map(|e| e.to_string()).unwrap_or_default();
                    assert!(error.contains(text), "{endpoint}: {error}");
                }
            }
        };
        check("http://127.0.0.1:3000", Ok("http://127.0.0.1:3000"));
        check("http://localhost:3000/api/v1", Ok("http://localhost:3000"));
        check("http://my.cluster", Ok("http://my.cluster:80"));
        check("http://[::1]:8080/", Ok("http://[::1]:8080"));
        check("127.0.0.1:3000", Ok("http://127.0.0.1:3000"));
        check("https://my.cluster", Ok("https://my.cluster:443"));
        check(
            "HTTPS://user@my.cluster:8443/hkube/",
            Ok("https://my.cluster:8443"),
        );
        check("ftp://x", Err("expected an http:// or https:// URL"));
        check("http://host:port", Err("port port is not a number"));
        check("http:///api", Err("no host"));
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
