//! What every request passes before a handler sees it: the path without its trailing slash,
//! the body's size from its headers, and, on a server without a token, proof that the request
//! does not come from a web page of another site.
//!
//! A server without a token listens on loopback only, but a browser on the same machine can
//! still reach it: any page can send a form or `text/plain` POST to `http://127.0.0.1:3000`
//! without asking first, and a page on a name that re-resolves to 127.0.0.1 (DNS rebinding)
//! can even read the answers. So, when no token is set, a request is refused (403) when
//! - its `Host` is a name other than `localhost` or one given with `--allowed-host` (an IP
//!   address is always allowed: a rebinding page is reached by its name, never by an address),
//! - or it carries an `Origin` that is not the server itself (`Origin` names the same host and
//!   port as `Host`) nor one of the allowed names; `Origin: null` (sandboxed pages, files) too.
//!
//! JSON routes also refuse a body that is not `application/json` (415, [`require_json`]): a
//! page cannot send JSON to another site without the browser asking that site first.
//! Git webhooks signed with the server's secret are exempt from the site checks: their
//! signature proves them, and GitHub reaches a server by its public name.
//!
//! This module decides; [`super::error`] alone turns its refusals into statuses.

use std::net::IpAddr;

use axum::body::HttpBody as _;
use axum::extract::{Request, State};
use axum::http::header::{HeaderMap, CONTENT_LENGTH, CONTENT_TYPE, HOST, ORIGIN};
use axum::http::uri::{Authority, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, ApiState, BODY_LIMIT};

/// `/api/v1/exec/raw/` → `/api/v1/exec/raw` (the query is kept); `/` stays.
pub(super) fn trim_trailing_slash(mut request: Request) -> Request {
    let path = request.uri().path();
    if path.len() > 1 && path.ends_with('/') {
        let trimmed = match path.trim_end_matches('/') {
            "" => "/",
            trimmed => trimmed,
        };
        let path_and_query = match request.uri().query() {
            Some(query) => format!("{trimmed}?{query}"),
            None => trimmed.to_string(),
        };
        let mut parts = request.uri().clone().into_parts();
        if let Ok(path_and_query) = path_and_query.parse() {
            parts.path_and_query = Some(path_and_query);
            if let Ok(uri) = Uri::from_parts(parts) {
                *request.uri_mut() = uri;
            }
        }
    }
    request
}

/// Body size first (no byte is read for a body announced too large), then the site checks.
pub(super) async fn check_request(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Response {
    if let Err(refusal) = check(&state, &request) {
        return refusal.into_response();
    }
    next.run(request).await
}

fn check(state: &ApiState, request: &Request) -> Result<(), ApiError> {
    let announced = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .unwrap_or_else(|| request.body().size_hint().lower());
    if announced > BODY_LIMIT as u64 {
        return Err(ApiError::PayloadTooLarge(format!(
            "the request body ({} MB) is larger than the {} MB this server reads",
            announced >> 20,
            BODY_LIMIT >> 20
        )));
    }
    if state.auth_token.is_none() && !is_signed_webhook(state, request) {
        check_site(request.headers(), request.uri(), &state.allowed_hosts)?;
    }
    Ok(())
}

/// A git webhook on a server that checks their signatures (the handler checks it).
pub(super) fn is_signed_webhook(state: &ApiState, request: &Request) -> bool {
    state.webhook_secret.is_some() && request.uri().path().starts_with("/api/v1/builds/webhook/")
}

/// The `Host` and `Origin` rules of the module doc.
fn check_site(headers: &HeaderMap, uri: &Uri, allowed: &[String]) -> Result<(), ApiError> {
    let host = headers
        .get(HOST)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
        .or_else(|| uri.authority().map(|a| a.as_str().to_string()));
    // No Host at all is not a browser (every browser sends one).
    let Some(host) = host else { return Ok(()) };
    // A browser always sends a well-formed Host; a client that does not is not one.
    let Ok(authority) = host.parse::<Authority>() else {
        return Ok(());
    };
    if !host_allowed(authority.host(), allowed) {
        return Err(ApiError::Forbidden(format!(
            "this server answers to localhost and IP addresses, not to {:?}: a web page on another name could be reaching it (DNS rebinding). If this is the server's own name, start it with --allowed-host {}, or give it a --token",
            authority.host(),
            authority.host()
        )));
    }
    let Some(origin) = headers.get(ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("null");
    let origin_authority = origin
        .parse::<Uri>()
        .ok()
        .and_then(|uri| uri.authority().cloned());
    let same_site = origin_authority.is_some_and(|o| {
        same_authority(&o, &authority) || allowed.iter().any(|a| a.eq_ignore_ascii_case(o.host()))
    });
    if !same_site {
        return Err(ApiError::Forbidden(format!(
            "requests from web pages of other sites are refused (Origin {origin}) on a server without a token: start the server with --token, or --allowed-host for a name it is served under"
        )));
    }
    Ok(())
}

/// `localhost`, an IP address, or a name given with `--allowed-host` (any case, a final dot
/// ignored).
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok()
        || allowed
            .iter()
            .any(|name| name.trim_end_matches('.').eq_ignore_ascii_case(host))
}

fn same_authority(a: &Authority, b: &Authority) -> bool {
    a.host().eq_ignore_ascii_case(b.host()) && a.port_u16() == b.port_u16()
}

/// A body other than JSON is refused with 415; a request without a body reads as `{}`.
pub(super) fn require_json(request: &Request) -> Result<(), ApiError> {
    let content_type = request
        .headers()
        .get(CONTENT_TYPE)
        .map(|value| value.to_str().unwrap_or("?").to_string());
    let no_body = match request.headers().get(CONTENT_LENGTH) {
        Some(length) => length.as_bytes() == b"0",
        None => request.body().size_hint().exact() == Some(0),
    };
    match content_type {
        Some(given) if is_json(&given) => Ok(()),
        None if no_body => Ok(()),
        given => Err(ApiError::UnsupportedMediaType(format!(
            "the request body must be JSON, with Content-Type: application/json (got {})",
            given.map_or_else(|| "no Content-Type".to_string(), |t| format!("{t:?}"))
        ))),
    }
}

/// `application/json`, with parameters (`; charset=utf-8`) or not, in any case.
fn is_json(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let allowed = vec!["hkube.example.org".to_string()];
        for ok in [
            "localhost",
            "LOCALHOST",
            "127.0.0.1",
            "[::1]",
            "10.1.2.3",
            "hkube.example.org",
            "HKUBE.example.org.",
        ] {
            assert!(host_allowed(ok, &allowed), "{ok} refused");
        }
        for refused in [
            "evil.example",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "",
        ] {
            assert!(!host_allowed(refused, &allowed), "{refused} allowed");
        }
    }

    #[test]
    fn json_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/x-www-form-urlencoded"));
        assert!(!is_json("application/jsonp"));
    }
}
