//! The HTTP API (axum): routes, request parsing and JSON errors.
//!
//! Every error is JSON, `{"error": "…"}` plus a `field` (400: which field of the request
//! is wrong) or a `reason` (409: a stable code such as `out_of_stock`). Statuses: `400`
//! malformed, `404` unknown store / order / material / purchase order, `409` refused
//! (cannot be made, cannot be cancelled), `422` an idempotency key reused for a
//! different order, `500` the database failed (logged; the body says no more).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use std::convert::Infallible;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

use crate::service::{OrderRequest, OrderService, ServiceError, Update};

/// The header that makes `POST /orders` safe to retry.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Set on a response that repeats an earlier one for the same idempotency key.
pub const REPLAYED: &str = "idempotent-replayed";
/// Longest idempotency key accepted.
pub const MAX_KEY_LEN: usize = 255;

/// A [`ServiceError`] as an HTTP response.
#[derive(Debug)]
pub struct ApiError(pub ServiceError);

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match &self.0 {
            ServiceError::BadRequest { field, reason } => (
                StatusCode::BAD_REQUEST,
                json!({"error": format!("{field}: {reason}"), "field": field}),
            ),
            ServiceError::NotFound(msg) => (StatusCode::NOT_FOUND, json!({"error": msg})),
            ServiceError::Rejected { reason, detail } => (
                StatusCode::CONFLICT,
                json!({"error": detail, "reason": reason}),
            ),
            ServiceError::KeyReused(msg) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"error": msg, "reason": "idempotency_key_reused"}),
            ),
            ServiceError::Db(e) => {
                tracing::error!("database: {e}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"error": "the database failed; see the service's log"}),
                )
            }
        };
        (status, axum::Json(body)).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

fn ok(value: Value) -> ApiResult {
    Ok(axum::Json(value).into_response())
}

/// The routes of the order service over `service`. Live streams
/// (`GET /orders/{id}/events`) end when `closing` turns true, so that a graceful shutdown
/// does not wait for their clients.
pub fn router(service: OrderService, closing: watch::Receiver<bool>) -> Router {
    Router::new()
        .route(
            "/health",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route("/stores", get(stores))
        .route("/stores/{id}", get(store))
        .route("/stores/{id}/stock", get(stock))
        .route("/stores/{id}/stock/{material}", put(set_stock))
        .route("/orders", post(place))
        .route("/orders/{id}", get(order))
        .route("/orders/{id}/cancel", post(cancel))
        .route("/orders/{id}/events", get(follow))
        .route("/orders/{id}/ready", post(ready))
        .route("/orders/{id}/offer/accept", post(accept_offer))
        .route("/orders/{id}/offer/decline", post(decline_offer))
        .route("/orders/{id}/pickup", post(pickup))
        .route("/orders/{id}/deliver", post(deliver))
        .route("/riders/{id}/location", post(rider_location))
        .route("/riders/{id}/availability", post(rider_availability))
        .route("/purchase-orders", get(purchase_orders))
        .route("/purchase-orders/{id}/receive", post(receive))
        .fallback(|| async {
            ApiError(ServiceError::NotFound(
                "no such route: see the README's API section".into(),
            ))
        })
        .with_state(Api { service, closing })
}

/// What the handlers share.
#[derive(Clone)]
struct Api {
    service: OrderService,
    closing: watch::Receiver<bool>,
}

impl axum::extract::FromRef<Api> for OrderService {
    fn from_ref(api: &Api) -> OrderService {
        api.service.clone()
    }
}

async fn stores(State(s): State<OrderService>) -> ApiResult {
    ok(s.stores().await?)
}

async fn store(State(s): State<OrderService>, Path(id): Path<String>) -> ApiResult {
    ok(s.store(&id).await?)
}

async fn stock(State(s): State<OrderService>, Path(id): Path<String>) -> ApiResult {
    ok(s.stock(&id).await?)
}

fn json_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, ServiceError> {
    let bad = |reason: String| ServiceError::BadRequest {
        field: "body".into(),
        reason,
    };
    match serde_json::from_slice(body) {
        Ok(Value::Object(obj)) => Ok(obj),
        Ok(_) => Err(bad("must be a JSON object".into())),
        Err(e) => Err(bad(format!("not valid JSON: {e}"))),
    }
}

async fn set_stock(
    State(s): State<OrderService>,
    Path((id, material)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let obj = json_object(&body)?;
    let amount = match obj.get("amount") {
        Some(v) => v.as_i64().ok_or_else(|| ServiceError::BadRequest {
            field: "amount".into(),
            reason: "must be an integer".into(),
        })?,
        None => {
            return Err(ServiceError::BadRequest {
                field: "amount".into(),
                reason: "is required".into(),
            }
            .into());
        }
    };
    ok(s.set_stock(&id, &material, amount).await?)
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ServiceError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let bad = |reason: &str| ServiceError::BadRequest {
        field: "Idempotency-Key".into(),
        reason: reason.into(),
    };
    let key = value
        .to_str()
        .map_err(|_| bad("must be visible ASCII"))?
        .trim();
    if key.is_empty() {
        return Err(bad("must not be empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(bad("at most 255 characters"));
    }
    Ok(Some(key.to_owned()))
}

async fn place(State(s): State<OrderService>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let key = idempotency_key(&headers)?;
    let req = OrderRequest::parse(&body)?;
    let placed = s.place(&req, key.as_deref()).await?;
    let mut response = (StatusCode::CREATED, axum::Json(placed.order.to_json())).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/orders/{}", placed.order.order_id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    if placed.replayed {
        response
            .headers_mut()
            .insert(REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}

async fn order(State(s): State<OrderService>, Path(id): Path<String>) -> ApiResult {
    ok(s.order(&id).await?.to_json())
}

async fn cancel(State(s): State<OrderService>, Path(id): Path<String>, body: Bytes) -> ApiResult {
    let reason = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        match json_object(&body)?.get("reason") {
            None | Some(Value::Null) => None,
            Some(Value::String(r)) => Some(r.clone()),
            Some(_) => {
                return Err(ServiceError::BadRequest {
                    field: "reason".into(),
                    reason: "must be a string".into(),
                }
                .into());
            }
        }
    };
    ok(s.cancel(&id, reason.as_deref()).await?.to_json())
}

#[derive(Deserialize)]
struct StatusFilter {
    status: Option<String>,
}

async fn purchase_orders(
    State(s): State<OrderService>,
    Query(filter): Query<StatusFilter>,
) -> ApiResult {
    if let Some(st) = filter.status.as_deref()
        && st != "open"
        && st != "received"
    {
        return Err(ServiceError::BadRequest {
            field: "status".into(),
            reason: "must be open or received".into(),
        }
        .into());
    }
    ok(s.purchase_orders(filter.status.as_deref()).await?)
}

async fn receive(State(s): State<OrderService>, Path(id): Path<String>) -> ApiResult {
    ok(s.receive(&id).await?)
}

fn field<'a>(
    obj: &'a serde_json::Map<String, Value>,
    name: &str,
) -> Result<&'a Value, ServiceError> {
    match obj.get(name) {
        None | Some(Value::Null) => Err(ServiceError::BadRequest {
            field: name.into(),
            reason: "is required".into(),
        }),
        Some(v) => Ok(v),
    }
}

fn rider_of(body: &[u8]) -> Result<String, ServiceError> {
    let obj = json_object(body)?;
    match field(&obj, "rider_id")? {
        Value::String(r) if !r.is_empty() => Ok(r.clone()),
        _ => Err(ServiceError::BadRequest {
            field: "rider_id".into(),
            reason: "must be a non-empty string".into(),
        }),
    }
}

async fn ready(State(s): State<OrderService>, Path(id): Path<String>) -> ApiResult {
    ok(s.ready(&id).await?.to_json())
}

async fn accept_offer(
    State(s): State<OrderService>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    ok(s.answer_offer(&id, &rider_of(&body)?, true)
        .await?
        .to_json())
}

async fn decline_offer(
    State(s): State<OrderService>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    ok(s.answer_offer(&id, &rider_of(&body)?, false)
        .await?
        .to_json())
}

async fn pickup(State(s): State<OrderService>, Path(id): Path<String>, body: Bytes) -> ApiResult {
    ok(s.hand_over(&id, &rider_of(&body)?, false).await?.to_json())
}

async fn deliver(State(s): State<OrderService>, Path(id): Path<String>, body: Bytes) -> ApiResult {
    ok(s.hand_over(&id, &rider_of(&body)?, true).await?.to_json())
}

async fn rider_location(
    State(s): State<OrderService>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let obj = json_object(&body)?;
    let number = |name: &str| -> Result<f64, ServiceError> {
        field(&obj, name)?
            .as_f64()
            .ok_or_else(|| ServiceError::BadRequest {
                field: name.into(),
                reason: "must be a number".into(),
            })
    };
    let (lat, lon) = (number("lat")?, number("lon")?);
    let speed = match obj.get("speed_mps") {
        None | Some(Value::Null) => None,
        Some(_) => Some(number("speed_mps")?),
    };
    ok(s.rider_location(&id, lat, lon, speed).await?)
}

async fn rider_availability(
    State(s): State<OrderService>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let obj = json_object(&body)?;
    let available =
        field(&obj, "available")?
            .as_bool()
            .ok_or_else(|| ServiceError::BadRequest {
                field: "available".into(),
                reason: "must be true or false".into(),
            })?;
    ok(s.rider_availability(&id, available)?)
}

fn sse_event(update: &Update) -> SseEvent {
    SseEvent::default()
        .event(update.kind)
        .data(update.data.to_string())
}

fn is_final(update: &Update) -> bool {
    update.kind == "status"
        && matches!(
            update.data["status"].as_str(),
            Some("delivered" | "cancelled")
        )
}

/// `GET /orders/{id}/events`: server-sent events, `status` (the order, as
/// `GET /orders/{id}`; the first event is its state now) and `rider` (the position of
/// the rider carrying it). The stream ends after `delivered` or `cancelled`.
async fn follow(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    // Subscribe before reading the order, so that no change falls in between.
    let updates = api.service.subscribe();
    let now = api.service.order(&id).await?;
    let first = Update {
        order_id: id.clone(),
        kind: "status",
        data: now.to_json(),
    };
    let done = is_final(&first);
    let head = futures::stream::once(futures::future::ready(Ok(sse_event(&first))));
    struct Follow {
        id: String,
        updates: broadcast::Receiver<Update>,
        closing: watch::Receiver<bool>,
        done: bool,
    }
    let state = Follow {
        id,
        updates,
        closing: api.closing.clone(),
        done,
    };
    let tail = futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            let got = tokio::select! {
                got = st.updates.recv() => Some(got),
                _ = st.closing.wait_for(|c| *c) => None,
            };
            match got {
                Some(Ok(u)) if u.order_id == st.id => {
                    st.done = is_final(&u);
                    return Some((Ok(sse_event(&u)), st));
                }
                Some(Ok(_) | Err(broadcast::error::RecvError::Lagged(_))) => {}
                Some(Err(broadcast::error::RecvError::Closed)) | None => return None,
            }
        }
    });
    Ok(Sse::new(head.chain(tail)).keep_alive(KeepAlive::default()))
}
