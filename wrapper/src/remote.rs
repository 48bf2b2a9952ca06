//! The task link over a network: a sidecar in a container reaches its orchestrator with a
//! websocket and exchanges [`link`](crate::link) messages as JSON text frames.
//!
//! The sidecar dials out (the orchestrator need not reach into containers). The first frame is
//! a hello naming the link version and the worker; an orchestrator with another version closes
//! the connection with the reason.

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::link::{FromSidecar, ToSidecar, LINK_VERSION};
use crate::sidecar::Link;

/// The first frame a sidecar sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hello {
    pub link_version: u32,
    /// The worker's name, as the orchestrator gave it (for example in the container's env).
    pub worker: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach the orchestrator at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("the link to the orchestrator failed: {0}")]
    Link(String),
}

/// Connects to the orchestrator and returns the sidecar's end of the link. The returned task
/// pumps messages both ways until either side closes.
pub async fn connect(
    url: &str,
    worker: &str,
) -> Result<(Link, tokio::task::JoinHandle<String>), Error> {
    // No Nagle: a small result must not wait for the orchestrator's delayed ACK (40 ms).
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .map_err(|e| Error::Connect {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
    let (mut sink, mut stream) = ws.split();
    let hello = Hello {
        link_version: LINK_VERSION,
        worker: worker.to_string(),
    };
    let text = serde_json::to_string(&hello).map_err(|e| Error::Link(e.to_string()))?;
    sink.send(Message::text(text))
        .await
        .map_err(|e| Error::Link(e.to_string()))?;

    let (to_sidecar, from_orchestrator) = mpsc::unbounded_channel::<ToSidecar>();
    let (to_orchestrator, mut from_sidecar) = mpsc::unbounded_channel::<FromSidecar>();
    let pump = tokio::spawn(async move {
        loop {
            tokio::select! {
                outgoing = from_sidecar.recv() => {
                    let Some(message) = outgoing else {
                        let _ = sink.close().await;
                        return "the sidecar ended".to_string();
                    };
                    let gone = matches!(message, FromSidecar::Gone { .. });
                    match serde_json::to_string(&message) {
                        Ok(text) => {
                            if let Err(error) = sink.send(Message::text(text)).await {
                                return format!("cannot send to the orchestrator: {error}");
                            }
                        }
                        Err(error) => eprintln!("hkube-wrapper: cannot encode a link message: {error}"),
                    }
                    if gone {
                        let _ = sink.close().await;
                        return "the sidecar is gone".to_string();
                    }
                }
                incoming = stream.next() => match incoming {
                    Some(Ok(Message::Text(text))) => match serde_json::from_str::<ToSidecar>(text.as_str()) {
                        Ok(message) => {
                            if to_sidecar.send(message).is_err() {
                                return "the sidecar ended".to_string();
                            }
                        }
                        Err(error) => eprintln!("hkube-wrapper: ignoring a link message it cannot read: {error}"),
                    },
                    Some(Ok(Message::Close(frame))) => {
                        let why = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                        return format!("the orchestrator closed the link {why}").trim_end().to_string();
                    }
                    Some(Ok(_)) => {}
                    Some(Err(error)) => return format!("the link to the orchestrator broke: {error}"),
                    None => return "the orchestrator closed the link".to_string(),
                },
            }
        }
    });
    Ok((
        Link {
            from_orchestrator,
            to_orchestrator,
        },
        pump,
    ))
}
