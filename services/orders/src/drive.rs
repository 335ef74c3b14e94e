//! `generate --via URL`: the simulation's customers and riders, through the services'
//! HTTP API instead of straight into a stream.
//!
//! The generator's records become requests, in the simulation's order:
//! `order_placed` → `POST /orders` (the event id as its `Idempotency-Key`, so a retried
//! request never orders twice), `order_cancelled` → `POST /orders/{id}/cancel`,
//! `rider_location` → `POST /riders/{id}/location`; a delivery's `order_picked_up` →
//! `POST /orders/{id}/ready`, and the rider the dispatcher offers it to accepts and picks
//! it up; `order_delivered` → that rider delivers it. The services decide: the stock
//! may refuse an order, the dispatcher picks its own rider (the nearest free one it
//! knows of, not necessarily the simulation's) or declines the delivery. What reaches
//! the stream is what the services emitted, and the report counts each outcome.
//! Malformed records (the generator's test knobs) are skipped.

use std::collections::HashMap;

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DriveReport {
    /// Records taken from the simulation.
    pub records: u64,
    /// Requests sent.
    pub requests: u64,
    /// Orders the service accepted (`201`).
    pub accepted: u64,
    /// Orders it refused (`409`: out of stock, not on the menu).
    pub rejected: u64,
    /// Cancellations carried out.
    pub cancelled: u64,
    /// Deliveries the dispatcher declined (nobody free within reach).
    pub declined: u64,
    /// Orders picked up by the rider the dispatcher chose.
    pub picked_up: u64,
    /// Orders delivered.
    pub delivered: u64,
    /// Rider pings sent.
    pub pings: u64,
    /// Requests answered with anything unexpected (logged).
    pub errors: u64,
    /// Latency of each `POST /orders`, microseconds, in order sent.
    pub order_latency_us: Vec<u64>,
}

impl DriveReport {
    /// The `q` quantile (0..=1) of `POST /orders` latency, milliseconds.
    pub fn order_latency_ms(&self, q: f64) -> Option<f64> {
        let mut v = self.order_latency_us.clone();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let i = ((v.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
        Some(v[i] as f64 / 1000.0)
    }
}

/// Errors that stop a run.
#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    /// The services could not be reached.
    #[error("cannot reach the services at {url}: {source}")]
    Unreachable {
        /// The URL.
        url: String,
        /// Why.
        source: reqwest::Error,
    },
}

struct Driver {
    http: Client,
    base: String,
    report: DriveReport,
    /// The simulation's order ids → the service's.
    orders: HashMap<String, String>,
    /// The service's order id → the rider carrying it.
    riders: HashMap<String, String>,
}

impl Driver {
    async fn call(
        &mut self,
        method: reqwest::Method,
        path: &str,
        body: Value,
        key: Option<&str>,
    ) -> Result<(StatusCode, Value), DriveError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url).json(&body);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        self.report.requests += 1;
        let resp = req
            .send()
            .await
            .map_err(|source| DriveError::Unreachable { url, source })?;
        let status = resp.status();
        let body = resp.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    async fn post(&mut self, path: &str, body: Value) -> Result<(StatusCode, Value), DriveError> {
        self.call(reqwest::Method::POST, path, body, None).await
    }

    fn unexpected(&mut self, what: &str, status: StatusCode, body: &Value) {
        self.report.errors += 1;
        tracing::warn!("{what}: {status} {body}");
    }

    async fn record(&mut self, ev: &Value) -> Result<(), DriveError> {
        let order = ev["order_id"].as_str().map(str::to_owned);
        match ev["event_type"].as_str() {
            Some("order_placed") => {
                let items: Vec<Value> = ev["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|i| json!({"product_id": i["product_id"], "qty": i["qty"]}))
                    .collect();
                let body = json!({
                    "store_id": ev["store_id"],
                    "items": items,
                    "channel": ev["channel"],
                    "delivery_type": ev["delivery_type"],
                    "customer_id": ev["customer_id"],
                });
                let key = ev["event_id"].as_str().map(str::to_owned);
                let sent = std::time::Instant::now();
                let (status, got) = self
                    .call(reqwest::Method::POST, "/orders", body, key.as_deref())
                    .await?;
                let took = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                self.report.order_latency_us.push(took);
                match (status, order, got["order_id"].as_str()) {
                    (StatusCode::CREATED, Some(sim), Some(id)) => {
                        self.report.accepted += 1;
                        self.orders.insert(sim, id.to_owned());
                    }
                    (StatusCode::CONFLICT, _, _) => {
                        self.report.rejected += 1;
                        tracing::debug!("order refused: {got}");
                    }
                    _ => self.unexpected("placing an order", status, &got),
                }
            }
            Some("order_cancelled") => {
                let Some(id) = order.and_then(|o| self.orders.remove(&o)) else {
                    return Ok(());
                };
                let (status, got) = self
                    .post(
                        &format!("/orders/{id}/cancel"),
                        json!({"reason": ev["reason"]}),
                    )
                    .await?;
                match status {
                    StatusCode::OK => self.report.cancelled += 1,
                    StatusCode::CONFLICT => {}
                    _ => self.unexpected("cancelling", status, &got),
                }
            }
            Some("rider_location") => {
                let Some(rider) = ev["rider_id"].as_str() else {
                    return Ok(());
                };
                let body =
                    json!({"lat": ev["lat"], "lon": ev["lon"], "speed_mps": ev["speed_mps"]});
                let (status, got) = self
                    .post(&format!("/riders/{rider}/location"), body)
                    .await?;
                if status == StatusCode::OK {
                    self.report.pings += 1;
                } else {
                    self.unexpected("a rider's ping", status, &got);
                }
            }
            Some("order_picked_up") => {
                let Some(id) = order.and_then(|o| self.orders.get(&o).cloned()) else {
                    return Ok(());
                };
                let (status, got) = self.post(&format!("/orders/{id}/ready"), json!({})).await?;
                if status != StatusCode::OK {
                    self.unexpected("dispatching", status, &got);
                    return Ok(());
                }
                let Some(rider) = got["rider_id"].as_str().map(str::to_owned) else {
                    // Nobody within reach: the service cancelled the order.
                    self.report.declined += 1;
                    return Ok(());
                };
                let who = json!({"rider_id": rider});
                let (status, got) = self
                    .post(&format!("/orders/{id}/offer/accept"), who.clone())
                    .await?;
                if status != StatusCode::OK {
                    self.unexpected("accepting an offer", status, &got);
                    return Ok(());
                }
                let (status, got) = self.post(&format!("/orders/{id}/pickup"), who).await?;
                if status == StatusCode::OK {
                    self.report.picked_up += 1;
                    self.riders.insert(id, rider);
                } else {
                    self.unexpected("picking up", status, &got);
                }
            }
            Some("order_delivered") => {
                let Some(id) = order.and_then(|o| self.orders.remove(&o)) else {
                    return Ok(());
                };
                let Some(rider) = self.riders.remove(&id) else {
                    return Ok(());
                };
                let (status, got) = self
                    .post(&format!("/orders/{id}/deliver"), json!({"rider_id": rider}))
                    .await?;
                if status == StatusCode::OK {
                    self.report.delivered += 1;
                } else {
                    self.unexpected("delivering", status, &got);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Sends `records` (the generator's JSON records, in order) to the services at `base`
/// (`http://HOST:PORT`), calling `progress` every 1,000 records.
pub async fn drive(
    base: &str,
    records: impl Iterator<Item = String>,
    mut progress: impl FnMut(&DriveReport),
) -> Result<DriveReport, DriveError> {
    let mut d = Driver {
        http: Client::new(),
        base: base.trim_end_matches('/').to_owned(),
        report: DriveReport::default(),
        orders: HashMap::new(),
        riders: HashMap::new(),
    };
    let health = format!("{}/health", d.base);
    d.http
        .get(&health)
        .send()
        .await
        .map_err(|source| DriveError::Unreachable {
            url: health,
            source,
        })?;
    for record in records {
        d.report.records += 1;
        // Malformed records (test knobs) are not requests anyone would send.
        if let Ok(ev) = serde_json::from_str::<Value>(&record) {
            d.record(&ev).await?;
        }
        if d.report.records.is_multiple_of(1_000) {
            progress(&d.report);
        }
    }
    Ok(d.report)
}
