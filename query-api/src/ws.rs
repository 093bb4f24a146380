//! `GET /graphql/ws`: subscriptions over WebSocket (graphql-transport-ws,
//! and the older graphql-ws), with the caps that keep clients from holding
//! the process:
//!
//! | what | setting | past it |
//! | --- | --- | --- |
//! | open connections per process | `GRAPHQL_WS_MAX_CONNECTIONS` | upgrade refused, 503 `TOO_MANY_CONNECTIONS` |
//! | subscriptions per connection | `GRAPHQL_WS_MAX_SUBSCRIPTIONS` | that subscription gets `TOO_MANY_SUBSCRIPTIONS`; the connection stays |
//! | time to `connection_init` | `GRAPHQL_WS_INIT_TIMEOUT_MS` | closed with 4408 |
//! | `Origin` | `GRAPHQL_WS_ALLOWED_ORIGINS` | upgrade refused, 403 `FORBIDDEN_ORIGIN` |
//! | a valid access token in `connection_init` | `OIDC_*` | closed with 4403 |
//!
//! The token comes in `connection_init`'s payload, as
//! `{"Authorization": "Bearer <token>"}` (browsers cannot set headers on a
//! WebSocket). Each subscription is checked against its caller when it
//! starts, and ends when the token expires.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql::{Data, Executor, Request, Response, ServerError};
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use axum::extract::{State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use futures::stream::BoxStream;
use futures::{SinkExt, Stream, StreamExt};
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::config::QueryConfig;
use crate::error::with_code;
use crate::limits::CodedSchema;

/// graphql-transport-ws's close code for a connection that sent no
/// `connection_init` in time.
const INIT_TIMEOUT_CODE: u16 = 4408;
/// graphql-transport-ws's close code for a refused `connection_init`.
const FORBIDDEN_CODE: u16 = 4403;
/// How a refused `connection_init`'s reason begins, so that its close
/// goes out with [`FORBIDDEN_CODE`] (async-graphql closes with 1002).
const REFUSED: &str = "Forbidden: ";

#[derive(Clone)]
struct WsState {
    executor: CodedSchema,
    /// One permit per open connection, held until its socket is done: the
    /// process-wide connection cap. An upgrade that finds none is refused
    /// rather than queued.
    connections: Arc<Semaphore>,
    max_subscriptions: usize,
    init_timeout: Duration,
    /// Origins let in besides the API's own, without a trailing `/`.
    allowed_origins: Arc<[String]>,
    verifier: identity::Verifier,
}

/// The `/graphql/ws` route over `executor`, capped as `config` says.
pub fn router(executor: CodedSchema, config: &QueryConfig, verifier: identity::Verifier) -> Router {
    let state = WsState {
        verifier,
        executor,
        connections: Arc::new(Semaphore::new(
            config.ws_max_connections.min(Semaphore::MAX_PERMITS),
        )),
        max_subscriptions: config.ws_max_subscriptions,
        init_timeout: config.ws_init_timeout(),
        allowed_origins: config
            .ws_allowed_origins
            .iter()
            .map(|origin| origin.trim().trim_end_matches('/').to_owned())
            .filter(|origin| !origin.is_empty())
            .collect(),
    };
    Router::new()
        .route("/graphql/ws", get(ws))
        .with_state(state)
}

/// A refused upgrade: `status` with a GraphQL-shaped error body and `code`.
fn refused(status: StatusCode, code: &'static str, message: String) -> axum::response::Response {
    metrics::counter!("eshop_graphql_ws_refused_total", "code" => code).increment(1);
    let body = json!({ "errors": [{ "message": message, "extensions": { "code": code } }] });
    (status, Json(body)).into_response()
}

async fn ws(
    State(state): State<WsState>,
    protocol: GraphQLProtocol,
    headers: HeaderMap,
    uri: Uri,
    upgrade: WebSocketUpgrade,
) -> axum::response::Response {
    if !origin_allowed(&headers, &uri, &state.allowed_origins) {
        return refused(
            StatusCode::FORBIDDEN,
            "FORBIDDEN_ORIGIN",
            "pages of this origin may not open a GraphQL WebSocket".to_owned(),
        );
    }
    let Ok(permit) = state.connections.clone().try_acquire_owned() else {
        tracing::warn!("graphql websocket refused: connection cap reached");
        return refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "TOO_MANY_CONNECTIONS",
            "the server holds as many GraphQL WebSocket connections as it may; try again later"
                .to_owned(),
        );
    };
    let connection = Connection {
        executor: state.executor,
        subscriptions: Arc::default(),
        max_subscriptions: state.max_subscriptions,
    };
    let init_timeout = state.init_timeout;
    let verifier = state.verifier;
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| {
            serve(socket, connection, protocol, init_timeout, permit, verifier)
        })
        .into_response()
}

/// Whether a browser page of the request's `Origin` may connect: no
/// `Origin` (not a browser), the API's own host and port, or one of
/// `allowed`. A cross-site page could otherwise subscribe with its
/// visitor's cookies (WebSockets are not subject to CORS).
fn origin_allowed(headers: &HeaderMap, uri: &Uri, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.trim_end_matches('/');
    if allowed
        .iter()
        .any(|allowed| allowed.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    // HTTP/1.1 names the host in `Host`, HTTP/2 in the URI's authority.
    let own = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .or_else(|| uri.authority().map(|authority| authority.as_str()));
    let origin_host = origin.split_once("://").map(|(_, host)| host);
    matches!((origin_host, own), (Some(origin), Some(own)) if origin.eq_ignore_ascii_case(own))
}

/// Runs the protocol on `socket` until either side ends it, closing it
/// with 4408 when no `connection_init` came within `init_timeout`. The
/// connection's `permit` is given back when this returns.
async fn serve(
    socket: WebSocket,
    connection: Connection,
    protocol: GraphQLProtocol,
    init_timeout: Duration,
    permit: OwnedSemaphorePermit,
    verifier: identity::Verifier,
) {
    let (mut sink, stream) = socket.split();
    // The protocol writes through a channel rather than to the socket, so
    // that a close can still be written once the protocol is dropped.
    let (outgoing, mut to_send) = futures::channel::mpsc::channel::<Message>(16);
    let (initialised, init) = oneshot::channel::<()>();
    let mut graphql = Box::pin(
        GraphQLWebSocket::new_with_pair(outgoing.clone(), stream, connection, protocol)
            .on_connection_init(move |payload| {
                // The supervisor may have given up already.
                let _ = initialised.send(());
                async move {
                    let caller = authenticate(&verifier, &payload).await.map_err(|reason| {
                        metrics::counter!("eshop_graphql_ws_refused_total", "code" => "UNAUTHENTICATED")
                            .increment(1);
                        async_graphql::Error::new(format!("{REFUSED}{reason}"))
                    })?;
                    let mut data = Data::default();
                    data.insert(caller);
                    Ok(data)
                }
            })
            .serve(),
    );
    let supervise = async move {
        let mut outgoing = outgoing;
        tokio::select! {
            () = &mut graphql => {}
            waited = tokio::time::timeout(init_timeout, init) => match waited {
                // Initialised in time, or the protocol ended.
                Ok(_) => graphql.await,
                Err(_) => {
                    drop(graphql);
                    metrics::counter!("eshop_graphql_ws_refused_total", "code" => "INIT_TIMEOUT")
                        .increment(1);
                    let close = Message::Close(Some(CloseFrame {
                        code: INIT_TIMEOUT_CODE,
                        reason: "Connection initialisation timeout".into(),
                    }));
                    // A client already gone needs no close.
                    drop(outgoing.send(close).await);
                }
            }
        }
    };
    let write = async move {
        while let Some(mut message) = to_send.next().await {
            if let Message::Close(Some(frame)) = &mut message
                && frame.reason.starts_with(REFUSED)
            {
                frame.code = FORBIDDEN_CODE;
            }
            if sink.send(message).await.is_err() {
                return;
            }
        }
        drop(sink.close().await);
    };
    tokio::join!(supervise, write);
    drop(permit);
}

/// The caller of a connection, from the token in `connection_init`'s
/// payload (`Authorization: Bearer …`, any case of the key); or why not.
async fn authenticate(
    verifier: &identity::Verifier,
    payload: &serde_json::Value,
) -> Result<identity::Caller, String> {
    let header = payload.as_object().and_then(|fields| {
        fields
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case("authorization"))
            .map(|(_, value)| value)
    });
    let token = match header {
        None => Err(identity::Rejection::Missing),
        Some(value) => value
            .as_str()
            .ok_or(identity::Rejection::Malformed)
            .and_then(identity::bearer),
    }
    .map_err(|rejection| format!("{rejection} in connection_init's Authorization"))?;
    verifier.verify(token).await.map_err(|error| match error {
        identity::VerifyError::Rejected(rejection) => rejection.to_string(),
        identity::VerifyError::Unavailable(unavailable) => {
            tracing::warn!(error = %unavailable, "a token could not be checked");
            "the identity provider is unavailable; try again".to_owned()
        }
    })
}

/// The executor of one connection: the schema, with a count of the
/// subscriptions the connection runs, each one past the cap answered
/// with a single `TOO_MANY_SUBSCRIPTIONS` error instead of run.
#[derive(Clone)]
struct Connection {
    executor: CodedSchema,
    subscriptions: Arc<AtomicUsize>,
    max_subscriptions: usize,
}

impl Executor for Connection {
    async fn execute(&self, request: Request) -> Response {
        self.executor.execute(request).await
    }

    fn execute_stream(
        &self,
        request: Request,
        session_data: Option<Arc<Data>>,
    ) -> BoxStream<'static, Response> {
        let max = self.max_subscriptions;
        let taken =
            self.subscriptions
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |running| {
                    (running < max).then_some(running + 1)
                });
        if taken.is_err() {
            metrics::counter!("eshop_graphql_ws_refused_total", "code" => "TOO_MANY_SUBSCRIPTIONS")
                .increment(1);
            let error = with_code(
                ServerError::new(
                    format!(
                        "this connection runs {max} subscriptions, the most allowed; complete one first"
                    ),
                    None,
                ),
                "TOO_MANY_SUBSCRIPTIONS",
            );
            return futures::stream::once(async move { Response::from_errors(vec![error]) })
                .boxed();
        }
        Counted {
            stream: self.executor.execute_stream(request, session_data),
            _slot: Slot(self.subscriptions.clone()),
        }
        .boxed()
    }
}

/// A subscription's place in its connection's count, given back when the
/// subscription's stream is dropped (completed by either side, or the
/// connection closed).
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A subscription's stream with its place in the count.
struct Counted {
    stream: BoxStream<'static, Response>,
    _slot: Slot,
}

impl Stream for Counted {
    type Item = Response;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Response>> {
        self.stream.poll_next_unpin(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    header::HeaderName::from_static(name),
                    value.parse().expect("a header value"),
                )
            })
            .collect()
    }

    fn allowed(pairs: &[(&'static str, &str)]) -> bool {
        let uri = Uri::from_static("/graphql/ws");
        origin_allowed(&headers(pairs), &uri, &["https://shop.example".to_owned()])
    }

    #[test]
    fn no_origin_the_own_host_and_listed_origins_are_let_in() {
        assert!(allowed(&[("host", "api.example:8081")]));
        assert!(allowed(&[
            ("host", "api.example:8081"),
            ("origin", "http://API.example:8081")
        ]));
        assert!(allowed(&[
            ("host", "api.example"),
            ("origin", "https://shop.example/")
        ]));
    }

    #[test]
    fn foreign_null_and_look_alike_origins_are_refused() {
        for origin in [
            "https://evil.example",
            "null",
            "http://api.example:8082",
            "https://shop.example.evil",
            "api.example:8081",
        ] {
            assert!(
                !allowed(&[("host", "api.example:8081"), ("origin", origin)]),
                "{origin}"
            );
        }
    }
}
