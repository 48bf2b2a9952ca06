//! The algorithm's websocket: the handshake (where the wrapper's query string is read), and
//! frames in and out in the negotiated encoding.

use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpStream, UnixStream};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::either::Either;

use crate::protocol::{self, Frame, Negotiated, ToAlgorithm};

/// An algorithm's connection: TCP (HKube's wrappers, containers) or a Unix socket (hkube's
/// own runtimes on this machine, see [`super::Sidecar::bind_local`]).
pub(super) type Stream = Either<TcpStream, UnixStream>;

pub(super) struct Connection {
    ws: WebSocketStream<Stream>,
    pub negotiated: Negotiated,
}

fn config(max_message_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(max_message_bytes))
        .max_frame_size(Some(max_message_bytes))
}

impl Connection {
    /// Completes the websocket handshake and reads the wrapper's choices from the query string.
    pub async fn accept(stream: Stream, max_message_bytes: usize) -> Result<Connection, String> {
        if let Either::Left(tcp) = &stream {
            let _ = tcp.set_nodelay(true);
        }
        let query: Arc<Mutex<Option<String>>> = Arc::default();
        let seen = query.clone();
        // The callback's error type is the library's (a whole HTTP response); it never fails.
        #[allow(clippy::result_large_err)]
        let callback = move |request: &Request, response: Response| {
            if let Ok(mut seen) = seen.lock() {
                *seen = request.uri().query().map(str::to_string);
            }
            Ok(response)
        };
        let ws = tokio_tungstenite::accept_hdr_async_with_config(
            stream,
            callback,
            Some(config(max_message_bytes)),
        )
        .await
        .map_err(|e| e.to_string())?;
        let query = query.lock().ok().and_then(|q| q.clone());
        Ok(Connection {
            ws,
            negotiated: Negotiated::from_query(query.as_deref()),
        })
    }

    pub async fn send(&mut self, message: &ToAlgorithm) -> Result<(), String> {
        let frame =
            protocol::encode(self.negotiated.encoding, message).map_err(|e| e.to_string())?;
        let message = match frame {
            Frame::Text(text) => Message::text(text),
            Frame::Binary(bytes) => Message::binary(bytes),
        };
        self.ws.send(message).await.map_err(|e| e.to_string())
    }

    pub async fn close(&mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// The next data frame from the algorithm: `None` when the connection closed, `Err` when it
/// broke. Pending forever when there is no connection, so it can sit in a `select!`.
pub(super) async fn next(conn: &mut Option<Connection>) -> Option<Result<Frame, String>> {
    let Some(conn) = conn else {
        return std::future::pending().await;
    };
    loop {
        match conn.ws.next().await {
            None | Some(Ok(Message::Close(_))) => return None,
            Some(Ok(Message::Text(text))) => {
                return Some(Ok(Frame::Text(text.as_str().to_string())))
            }
            Some(Ok(Message::Binary(bytes))) => return Some(Ok(Frame::Binary(bytes.to_vec()))),
            // Pings are answered by the library; pongs and raw frames carry nothing for us.
            Some(Ok(_)) => continue,
            Some(Err(error)) => return Some(Err(error.to_string())),
        }
    }
}

/// Completes the handshake of an extra connection only to close it with the reason.
pub(super) async fn refuse(stream: Stream, reason: String, max_message_bytes: usize) {
    if let Ok(mut conn) = Connection::accept(stream, max_message_bytes).await {
        let frame = CloseFrame {
            code: CloseCode::Library(4001),
            reason: truncate(&reason, 120).into(),
        };
        let _ = conn.ws.close(Some(frame)).await;
    }
}

/// Close reasons must fit in a control frame (125 bytes with the code).
fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}
