//! The orchestrator's end of the task link for sidecars in containers: a websocket listener on
//! the Docker bridge's gateway address, where each sidecar dials in and names its worker.
//!
//! A worker's name is a random 128-bit token handed to its container only, so a connection
//! that names no waiting worker is closed without a word about who is expected.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use wrapper::link::{FromSidecar, ToSidecar, LINK_VERSION};
use wrapper::remote::Hello;

/// The orchestrator's two channel ends for one connected sidecar.
#[derive(Debug)]
pub struct LinkEnds {
    pub to_sidecar: mpsc::UnboundedSender<ToSidecar>,
    pub from_sidecar: mpsc::UnboundedReceiver<FromSidecar>,
}

type Waiting = Arc<Mutex<HashMap<String, oneshot::Sender<LinkEnds>>>>;

/// Accepts sidecars' links; cheap to clone.
#[derive(Debug, Clone)]
pub struct LinkServer {
    address: SocketAddr,
    waiting: Waiting,
}

impl LinkServer {
    /// Listens on `address` (port 0 picks a free one) and serves links until the runtime ends.
    pub async fn bind(address: SocketAddr) -> std::io::Result<LinkServer> {
        let listener = TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let waiting: Waiting = Arc::default();
        let server = LinkServer {
            address,
            waiting: waiting.clone(),
        };
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(stream, waiting.clone()));
            }
        });
        Ok(server)
    }

    /// The URL sidecars dial.
    pub fn url(&self) -> String {
        format!("ws://{}/link", self.address)
    }

    /// Waits for the sidecar of `worker` to connect.
    pub fn expect(&self, worker: &str) -> oneshot::Receiver<LinkEnds> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.insert(worker.to_string(), tx);
        }
        rx
    }

    /// Gives up waiting for `worker` (it failed to start).
    pub fn forget(&self, worker: &str) {
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.remove(worker);
        }
    }
}

async fn serve(stream: tokio::net::TcpStream, waiting: Waiting) {
    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let close = |reason: &str| {
        Message::Close(Some(CloseFrame {
            code: CloseCode::Policy,
            reason: reason.to_string().into(),
        }))
    };
    let hello = match stream.next().await {
        Some(Ok(Message::Text(text))) => serde_json::from_str::<Hello>(text.as_str()).ok(),
        _ => None,
    };
    let Some(hello) = hello else {
        let _ = sink.send(close("expected a hello")).await;
        return;
    };
    if hello.link_version != LINK_VERSION {
        let reason = format!(
            "link version {} is not {LINK_VERSION}: the image's sidecar is from another hkube",
            hello.link_version
        );
        let _ = sink.send(close(&reason)).await;
        return;
    }
    let sender = waiting
        .lock()
        .ok()
        .and_then(|mut waiting| waiting.remove(&hello.worker));
    let Some(sender) = sender else {
        let _ = sink.send(close("unknown worker")).await;
        return;
    };
    let (to_sidecar, mut outgoing) = mpsc::unbounded_channel::<ToSidecar>();
    let (incoming, from_sidecar) = mpsc::unbounded_channel::<FromSidecar>();
    if sender
        .send(LinkEnds {
            to_sidecar,
            from_sidecar,
        })
        .is_err()
    {
        let _ = sink.send(close("the worker is no longer expected")).await;
        return;
    }
    let mut gone_sent = false;
    let reason = loop {
        tokio::select! {
            message = outgoing.recv() => {
                let Some(message) = message else {
                    let _ = sink.close().await;
                    break None;
                };
                let Ok(text) = serde_json::to_string(&message) else { continue };
                if let Err(error) = sink.send(Message::text(text)).await {
                    break Some(format!("the link to the sidecar broke: {error}"));
                }
            }
            frame = stream.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    if let Ok(message) = serde_json::from_str::<FromSidecar>(text.as_str()) {
                        gone_sent |= matches!(message, FromSidecar::Gone { .. });
                        if incoming.send(message).is_err() {
                            break None;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None => break Some("the sidecar closed its link".to_string()),
                Some(Ok(_)) => {}
                Some(Err(error)) => break Some(format!("the link to the sidecar broke: {error}")),
            },
        }
    };
    // A sidecar that vanished without saying goodbye is gone all the same.
    if let (false, Some(reason)) = (gone_sent, reason) {
        let _ = incoming.send(FromSidecar::Gone { reason });
    }
}
