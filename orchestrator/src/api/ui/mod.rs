//! The web UI at `/`: one HTML shell, a stylesheet and a script, compiled into the binary
//! (`include_str!`), served on the API's port. The pages render in the browser from the REST
//! API and its event streams (docs/dashboard.md says why this shape). The shell carries no
//! data and needs no token; everything it shows comes through `/api`, which does.

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("app.css");

/// Every page may only load this server's own script and style, and no page may frame it.
const SECURITY: [(header::HeaderName, &str); 3] = [
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
    ),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::CACHE_CONTROL, "no-cache"),
];

fn page(job_id: &str) -> Response {
    let html = INDEX.replace("{{JOB}}", &escape(job_id));
    (
        SECURITY,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response()
}

/// `GET /`: the jobs, algorithms and builds.
pub async fn index() -> Response {
    page("")
}

/// `GET /jobs/{jobId}`: one job's page.
pub async fn job(Path(job_id): Path<String>) -> Response {
    page(&job_id)
}

pub async fn script() -> Response {
    (
        SECURITY,
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

pub async fn style() -> Response {
    (
        SECURITY,
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        STYLE,
    )
        .into_response()
}

/// Text for an HTML attribute.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_job_id_cannot_break_out_of_its_attribute() {
        assert_eq!(super::escape("\"><script>"), "&quot;&gt;&lt;script&gt;");
    }
}
