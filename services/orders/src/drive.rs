//! `generate --via URL`: the simulation's customers and riders, through the services'
//! HTTP API instead of straight into a stream.
//!
//! The generator's records become requests, in the simulation's order:
//! `order_placed` → `POST /orders` (the run's key prefix and the event id as its
//! `Idempotency-Key`, so a retried request never orders twice, and a second run of the
//! same simulation orders anew), `order_cancelled` → `POST /orders/{id}/cancel`,
//! `rider_location` → `POST /riders/{id}/location`; a delivery's `order_picked_up` →
//! `POST /orders/{id}/ready`, and the rider the dispatcher offers it to accepts and picks
//! it up; `order_delivered` → that rider delivers it. The services decide: the stock
//! may refuse an order, the dispatcher picks its own rider (the nearest free one it
//! knows of, not necessarily the simulation's) or declines the delivery. What reaches
//! the stream is what the services emitted, and the report counts each outcome.
//! Malformed records (the generator's test knobs) are skipped.
//!
//! A retried order (the generator's duplicates) is sent again with its idempotency key
//! and counted once, as accepted or refused; a retried pickup or cancellation of an
//! order that is gone is not sent. Pings are sent as they come. Simulated suppliers deliver open purchase orders now and then
//! ([`DriveOptions::restock_every`]), so that a long run does not simply sell out.
//!
//! Several clients send at once, as many customers and riders would. Records are
//! sharded by order, pings by rider, so that one client carries each order from
//! placement to delivery and each rider's pings in the simulation's order; what differs
//! between clients is only how orders and pings interleave, which the services must
//! take anyway.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use tokio::sync::mpsc;

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
    /// Purchase orders the simulated suppliers delivered.
    pub restocked: u64,
    /// Accepted orders whose ETA was quoted from the lake (`store_delivery_5m`), not
    /// the default.
    pub eta_from_lake: u64,
    /// Latency of each `POST /orders`, microseconds (in order sent, per client).
    pub order_latency_us: Vec<u64>,
}

/// The counters of a run, shared by its clients so that progress can be shown while
/// they work.
#[derive(Debug, Default)]
struct Tally {
    records: AtomicU64,
    requests: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    cancelled: AtomicU64,
    declined: AtomicU64,
    picked_up: AtomicU64,
    delivered: AtomicU64,
    pings: AtomicU64,
    errors: AtomicU64,
    restocked: AtomicU64,
    eta_from_lake: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Tally {
    /// The counters now, without latencies.
    fn snapshot(&self) -> DriveReport {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DriveReport {
            records: get(&self.records),
            requests: get(&self.requests),
            accepted: get(&self.accepted),
            rejected: get(&self.rejected),
            cancelled: get(&self.cancelled),
            declined: get(&self.declined),
            picked_up: get(&self.picked_up),
            delivered: get(&self.delivered),
            pings: get(&self.pings),
            errors: get(&self.errors),
            restocked: get(&self.restocked),
            eta_from_lake: get(&self.eta_from_lake),
            order_latency_us: Vec::new(),
        }
    }
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

/// One client: the orders (and riders) of its shard.
struct Driver {
    http: Client,
    base: String,
    tally: Arc<Tally>,
    key_prefix: Arc<str>,
    order_latency_us: Vec<u64>,
    /// The simulation's order ids → the service's.
    orders: HashMap<String, String>,
    /// The simulation's orders the services have answered: accepted (`true`) or
    /// refused (`false`). A retry is not a new order.
    decided: HashMap<String, bool>,
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
        bump(&self.tally.requests);
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
        bump(&self.tally.errors);
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
                let key = ev["event_id"]
                    .as_str()
                    .map(|id| format!("{}{id}", self.key_prefix));
                let sent = std::time::Instant::now();
                let (status, got) = self
                    .call(reqwest::Method::POST, "/orders", body, key.as_deref())
                    .await?;
                let took = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                self.order_latency_us.push(took);
                let before = order.as_ref().and_then(|o| self.decided.get(o).copied());
                match (status, order, got["order_id"].as_str()) {
                    (StatusCode::CREATED, Some(sim), Some(_)) if before == Some(true) => {
                        tracing::debug!("a retry of {sim}, answered with the same order");
                    }
                    (StatusCode::CREATED, Some(sim), Some(id)) => {
                        if before == Some(false) {
                            // Refused before, accepted on the retry (a refusal keeps
                            // nothing, so the retry is judged afresh): one order.
                            self.tally.rejected.fetch_sub(1, Ordering::Relaxed);
                        }
                        self.decided.insert(sim.clone(), true);
                        bump(&self.tally.accepted);
                        let source = got["eta"]["source"].as_str().unwrap_or_default();
                        if source.starts_with("store_delivery_5m") {
                            bump(&self.tally.eta_from_lake);
                        }
                        self.orders.insert(sim, id.to_owned());
                    }
                    (StatusCode::CONFLICT, sim, _) => {
                        if before.is_none() {
                            bump(&self.tally.rejected);
                        }
                        if let Some(sim) = sim {
                            self.decided.entry(sim).or_insert(false);
                        }
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
                    StatusCode::OK => bump(&self.tally.cancelled),
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
                    bump(&self.tally.pings);
                } else {
                    self.unexpected("a rider's ping", status, &got);
                }
            }
            Some("order_picked_up") => {
                let Some(id) = order.and_then(|o| self.orders.get(&o).cloned()) else {
                    return Ok(());
                };
                if self.riders.contains_key(&id) {
                    // A retried pickup: that rider has it already.
                    return Ok(());
                }
                let (status, got) = self.post(&format!("/orders/{id}/ready"), json!({})).await?;
                if status != StatusCode::OK {
                    self.unexpected("dispatching", status, &got);
                    return Ok(());
                }
                let Some(rider) = got["rider_id"].as_str().map(str::to_owned) else {
                    // Nobody within reach: the service cancelled the order, and a retried
                    // record of it finds nothing to do.
                    bump(&self.tally.declined);
                    self.orders.retain(|_, service_id| *service_id != id);
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
                    bump(&self.tally.picked_up);
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
                    bump(&self.tally.delivered);
                } else {
                    self.unexpected("delivering", status, &got);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// How a run drives the services.
#[derive(Debug, Clone)]
pub struct DriveOptions {
    /// Concurrent clients (at least one).
    pub clients: usize,
    /// How often the simulated suppliers deliver every open purchase order; `None`:
    /// never (stock runs out and orders are refused).
    pub restock_every: Option<std::time::Duration>,
    /// Put before each record's event id to make its `Idempotency-Key`: one per run
    /// (the same simulation run twice is two crowds of customers). Empty: one made
    /// from the clock.
    pub key_prefix: String,
}

impl Default for DriveOptions {
    fn default() -> Self {
        DriveOptions {
            clients: 4,
            restock_every: Some(std::time::Duration::from_secs(1)),
            key_prefix: String::new(),
        }
    }
}

/// A prefix of idempotency keys unique to this run: the clock, in hex nanoseconds.
fn run_prefix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{nanos:x}-")
}

/// The suppliers: every `every`, each open purchase order is delivered.
async fn suppliers(http: Client, base: String, tally: Arc<Tally>, every: std::time::Duration) {
    loop {
        tokio::time::sleep(every).await;
        let url = format!("{base}/purchase-orders?status=open");
        let open: Vec<Value> = match http.get(&url).send().await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(e) => {
                tracing::warn!("suppliers: {url}: {e}");
                continue;
            }
        };
        for po in open {
            let Some(id) = po["id"].as_str() else {
                continue;
            };
            let url = format!("{base}/purchase-orders/{id}/receive");
            match http.post(&url).send().await {
                Ok(r) if r.status() == StatusCode::OK => bump(&tally.restocked),
                // Received meanwhile by someone else: nothing to do.
                Ok(r) if r.status() == StatusCode::CONFLICT => {}
                Ok(r) => tracing::warn!("suppliers: {url}: {}", r.status()),
                Err(e) => tracing::warn!("suppliers: {url}: {e}"),
            }
        }
    }
}

/// The client that carries a record: a ping by its rider (so that one rider's pings
/// stay in order, also while it carries an order), anything else by its order.
fn shard(ev: &Value, clients: usize) -> usize {
    let key = if ev["event_type"] == "rider_location" {
        ev["rider_id"].as_str()
    } else {
        ev["order_id"].as_str().or(ev["rider_id"].as_str())
    };
    key.map_or(0, |k| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        k.hash(&mut h);
        (h.finish() % clients as u64) as usize
    })
}

/// Sends `records` (the generator's JSON records, in order) to the services at `base`
/// (`http://HOST:PORT`) as `options` say, calling `progress` every 1,000 records.
/// Needs a Tokio runtime; clients run as its tasks.
pub async fn drive(
    base: &str,
    records: impl Iterator<Item = String>,
    options: DriveOptions,
    mut progress: impl FnMut(&DriveReport),
) -> Result<DriveReport, DriveError> {
    let http = Client::new();
    let base = base.trim_end_matches('/').to_owned();
    let health = format!("{base}/health");
    http.get(&health)
        .send()
        .await
        .map_err(|source| DriveError::Unreachable {
            url: health,
            source,
        })?;
    let tally = Arc::new(Tally::default());
    let supplying = options.restock_every.map(|every| {
        tokio::spawn(suppliers(
            http.clone(),
            base.clone(),
            Arc::clone(&tally),
            every,
        ))
    });
    let clients = options.clients.max(1);
    let key_prefix: Arc<str> = if options.key_prefix.is_empty() {
        run_prefix().into()
    } else {
        options.key_prefix.into()
    };
    let mut queues = Vec::with_capacity(clients);
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (tx, mut rx) = mpsc::channel::<Value>(256);
        let mut d = Driver {
            http: http.clone(),
            base: base.clone(),
            tally: Arc::clone(&tally),
            key_prefix: Arc::clone(&key_prefix),
            order_latency_us: Vec::new(),
            orders: HashMap::new(),
            decided: HashMap::new(),
            riders: HashMap::new(),
        };
        queues.push(tx);
        tasks.push(tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                d.record(&ev).await?;
            }
            Ok::<_, DriveError>(d.order_latency_us)
        }));
    }
    for record in records {
        let n = tally.records.fetch_add(1, Ordering::Relaxed) + 1;
        // Malformed records (test knobs) are not requests anyone would send.
        if let Ok(ev) = serde_json::from_str::<Value>(&record) {
            let i = shard(&ev, clients);
            if queues[i].send(ev).await.is_err() {
                // That client stopped on an error: collect it below.
                break;
            }
        }
        if n.is_multiple_of(1_000) {
            progress(&tally.snapshot());
        }
    }
    drop(queues);
    let (mut latencies, mut failed) = (Vec::new(), None);
    for task in tasks {
        match task.await {
            Ok(Ok(l)) => latencies.extend(l),
            Ok(Err(e)) => failed = failed.or(Some(e)),
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        }
    }
    if let Some(s) = supplying {
        s.abort();
    }
    if let Some(e) = failed {
        return Err(e);
    }
    Ok(DriveReport {
        order_latency_us: latencies,
        ..tally.snapshot()
    })
}
