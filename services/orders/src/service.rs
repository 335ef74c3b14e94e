//! Orders against inventory: the rules, in database transactions.
//!
//! **Never oversell.** An order reserves every raw material of every item's recipe in
//! one transaction, each with a conditional decrement
//! (`UPDATE stock SET amount = amount - n WHERE … AND amount >= n`): the database
//! checks and takes in one step, so two orders racing for the last portions cannot both
//! see enough. Materials are taken in name order, so concurrent orders lock rows in the
//! same order and cannot deadlock; the first material that falls short rolls the whole
//! order back (`409 out_of_stock`). A `CHECK (amount >= 0)` stands behind it.
//!
//! **One purchase order at a time.** A decrement that leaves a material below its
//! threshold opens a supplier purchase order — unless one is open: a partial unique
//! index (`WHERE status = 'open'`) makes "never two while one is open" the database's
//! rule, and `ON CONFLICT DO NOTHING` tells the order that came second.
//!
//! **Idempotency keys.** The order row carries its key under a unique constraint and is
//! inserted before any stock is touched: a retry racing the original waits on the
//! constraint, then finds the committed order and answers with it (a retry of a request
//! that was rejected is evaluated afresh: nothing was kept). The same key with a
//! different request is refused.
//!
//! **Events.** Every change's event is written to the `outbox` table in the change's own
//! transaction; the relay ([`crate::outbox`]) sends it after commit. An accepted order
//! thus always reaches the stream (at least once; the processor de-duplicates by
//! `event_id`), and a rolled-back one never does.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use rushhour_dispatch::Dispatcher;
use rushhour_schemas::time::format_millis;
use rushhour_schemas::{Channel, DeliveryType, Event, EventType, Item};
use serde_json::{Value, json};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Row, Transaction};
use tokio::sync::{Notify, broadcast};

use crate::catalog::{MATERIALS, RECIPES};
use crate::eta::{Eta, EtaSource};
use crate::ids;

/// The outbox topic of order events (`--to`).
pub const ORDERS_TOPIC: &str = "orders";
/// The outbox topic of purchase-order events (`--purchase-orders-to`).
pub const PURCHASE_ORDERS_TOPIC: &str = "purchase_orders";
/// The event type of a new supplier purchase order (a contract addition: its own topic,
/// never read by the processor's tables).
pub const PURCHASE_ORDER_CREATED: &str = "purchase_order_created";

/// Riders farther than this from the store are not offered its orders (`serve
/// --max-rider-distance`).
pub const DEFAULT_MAX_RIDER_DISTANCE_M: f64 = 5_000.0;
/// An offer not answered in this long goes to the next rider (`serve --offer-timeout`).
pub const DEFAULT_OFFER_TIMEOUT_MS: i64 = 30_000;

/// Largest quantity of one line, and most lines in one order: a typo such as `qty:
/// 1000000` is refused as malformed rather than checked against stock.
pub const MAX_QTY: i64 = 100;
/// See [`MAX_QTY`].
pub const MAX_LINES: usize = 50;

/// Why a request was not carried out. Each maps to one HTTP status ([`crate::http`]).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Malformed request: `field` says where (e.g. `items[1].qty`).
    #[error("{field}: {reason}")]
    BadRequest {
        /// The JSON path of the offending field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No such store, order, material or purchase order.
    #[error("{0}")]
    NotFound(String),
    /// Well-formed but refused: `reason` is a stable code (`out_of_stock`,
    /// `not_on_menu`, `not_cancellable`, `already_received`), `detail` says more.
    #[error("{detail}")]
    Rejected {
        /// A stable, machine-readable code.
        reason: &'static str,
        /// For people.
        detail: String,
    },
    /// An idempotency key reused with a different request.
    #[error("{0}")]
    KeyReused(String),
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

fn bad(field: impl Into<String>, reason: impl Into<String>) -> ServiceError {
    ServiceError::BadRequest {
        field: field.into(),
        reason: reason.into(),
    }
}

/// One line of an order request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// A product on the store's menu.
    pub product_id: String,
    /// 1..=[`MAX_QTY`].
    pub qty: i64,
}

/// `POST /orders`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderRequest {
    /// The store asked.
    pub store_id: String,
    /// What, how many.
    pub items: Vec<Line>,
    /// `online` (default) or `in_store`.
    pub channel: Channel,
    /// `delivery` (default) or `pickup`.
    pub delivery_type: DeliveryType,
    /// Optional, passed on to the event.
    pub customer_id: Option<String>,
}

impl OrderRequest {
    /// Parses and validates a JSON body, naming the first field that is wrong.
    pub fn parse(body: &[u8]) -> Result<OrderRequest, ServiceError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| bad("body", format!("not valid JSON: {e}")))?;
        let Value::Object(obj) = value else {
            return Err(bad("body", "must be a JSON object"));
        };
        let store_id = match obj.get("store_id") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::String(_)) => return Err(bad("store_id", "must not be empty")),
            None | Some(Value::Null) => return Err(bad("store_id", "is required")),
            Some(_) => return Err(bad("store_id", "must be a string")),
        };
        let items = match obj.get("items") {
            Some(Value::Array(a)) => a,
            None | Some(Value::Null) => return Err(bad("items", "is required")),
            Some(_) => return Err(bad("items", "must be an array")),
        };
        if items.is_empty() {
            return Err(bad("items", "must list at least one item"));
        }
        if items.len() > MAX_LINES {
            return Err(bad("items", format!("at most {MAX_LINES} lines")));
        }
        let mut lines = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let Value::Object(item) = item else {
                return Err(bad(format!("items[{i}]"), "must be an object"));
            };
            let product_id = match item.get("product_id") {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                None | Some(Value::Null) => {
                    return Err(bad(format!("items[{i}].product_id"), "is required"));
                }
                Some(_) => {
                    return Err(bad(
                        format!("items[{i}].product_id"),
                        "must be a non-empty string",
                    ));
                }
            };
            let qty = match item.get("qty") {
                None | Some(Value::Null) => 1,
                Some(Value::Number(n)) => match n.as_i64() {
                    Some(q) if (1..=MAX_QTY).contains(&q) => q,
                    _ => {
                        return Err(bad(
                            format!("items[{i}].qty"),
                            format!("must be an integer from 1 to {MAX_QTY}"),
                        ));
                    }
                },
                Some(_) => return Err(bad(format!("items[{i}].qty"), "must be an integer")),
            };
            lines.push(Line { product_id, qty });
        }
        let channel = match obj.get("channel") {
            None | Some(Value::Null) => Channel::Online,
            Some(Value::String(s)) if s == "online" => Channel::Online,
            Some(Value::String(s)) if s == "in_store" => Channel::InStore,
            Some(_) => return Err(bad("channel", "must be \"online\" or \"in_store\"")),
        };
        let delivery_type = match obj.get("delivery_type") {
            None | Some(Value::Null) => DeliveryType::Delivery,
            Some(Value::String(s)) if s == "delivery" => DeliveryType::Delivery,
            Some(Value::String(s)) if s == "pickup" => DeliveryType::Pickup,
            Some(_) => return Err(bad("delivery_type", "must be \"delivery\" or \"pickup\"")),
        };
        let customer_id = match obj.get("customer_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(bad("customer_id", "must be a string")),
        };
        Ok(OrderRequest {
            store_id,
            items: lines,
            channel,
            delivery_type,
            customer_id,
        })
    }
}

/// An order as `GET /orders/{id}` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderView {
    /// `ord-…`
    pub order_id: String,
    /// The store.
    pub store_id: String,
    /// `placed`, `cancelled` (and, with dispatch, `picked_up`, `delivered`).
    pub status: String,
    /// The channel.
    pub channel: String,
    /// The delivery type.
    pub delivery_type: String,
    /// As given.
    pub customer_id: Option<String>,
    /// Lines with the prices charged.
    pub items: Value,
    /// Items plus the store's delivery fee for deliveries.
    pub total_cents: i64,
    /// Epoch ms.
    pub placed_ms: i64,
    /// Epoch ms of the last status change.
    pub updated_ms: i64,
    /// Quoted arrival, epoch ms.
    pub eta_ms: i64,
    /// Where the quote came from.
    pub eta_source: String,
    /// The rider offered or carrying it.
    pub rider_id: Option<String>,
}

impl OrderView {
    fn from_row(row: &AnyRow) -> Result<OrderView, sqlx::Error> {
        let items: String = row.try_get("items")?;
        Ok(OrderView {
            order_id: row.try_get("id")?,
            store_id: row.try_get("store_id")?,
            status: row.try_get("status")?,
            channel: row.try_get("channel")?,
            delivery_type: row.try_get("delivery_type")?,
            customer_id: row.try_get("customer_id")?,
            items: serde_json::from_str(&items).unwrap_or(Value::Null),
            total_cents: row.try_get("total_cents")?,
            placed_ms: row.try_get("placed_ms")?,
            updated_ms: row.try_get("updated_ms")?,
            eta_ms: row.try_get("eta_ms")?,
            eta_source: row.try_get("eta_source")?,
            rider_id: row.try_get("rider_id")?,
        })
    }

    /// The JSON of the API.
    pub fn to_json(&self) -> Value {
        json!({
            "order_id": self.order_id,
            "store_id": self.store_id,
            "status": self.status,
            "channel": self.channel,
            "delivery_type": self.delivery_type,
            "customer_id": self.customer_id,
            "items": self.items,
            "total_cents": self.total_cents,
            "rider_id": self.rider_id,
            "placed_at": format_millis(self.placed_ms),
            "updated_at": format_millis(self.updated_ms),
            "eta": {
                "at": format_millis(self.eta_ms),
                "minutes": ((self.eta_ms - self.placed_ms) as f64 / 60_000.0 * 10.0).round() / 10.0,
                "source": self.eta_source,
            },
        })
    }

    /// Whether `req` asks for this order (for idempotency keys).
    fn matches(&self, req: &OrderRequest) -> bool {
        let lines: Vec<(String, i64)> = self
            .items
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|i| {
                        (
                            i["product_id"].as_str().unwrap_or_default().to_owned(),
                            i["qty"].as_i64().unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let asked: Vec<(String, i64)> = req
            .items
            .iter()
            .map(|l| (l.product_id.clone(), l.qty))
            .collect();
        self.store_id == req.store_id
            && lines == asked
            && self.channel == req.channel.as_str()
            && self.delivery_type == req.delivery_type.as_str()
            && self.customer_id == req.customer_id
    }
}

/// What [`OrderService::place`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    /// The order.
    pub order: OrderView,
    /// Whether an earlier request with the same idempotency key placed it.
    pub replayed: bool,
}

/// A change to an order, for those following it live (`GET /orders/{id}/events`).
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    /// The order.
    pub order_id: String,
    /// `status` (the order as `GET /orders/{id}` shows it) or `rider` (its rider's
    /// position: `rider_id`, `lat`, `lon`).
    pub kind: &'static str,
    /// The data.
    pub data: Value,
}

/// Orders held by the database; riders and offers held in memory by the dispatcher
/// ([`crate::delivery`]), so one process runs dispatch for a city.
#[derive(Clone)]
pub struct OrderService {
    pub(crate) pool: AnyPool,
    eta: Arc<dyn EtaSource>,
    pub(crate) outbox: Arc<Notify>,
    pub(crate) clock: fn() -> i64,
    pub(crate) dispatch: Arc<Mutex<Dispatcher>>,
    pub(crate) offer_timeout_ms: i64,
    pub(crate) updates: broadcast::Sender<Update>,
}

fn wall_clock_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

pub(crate) const ORDER_COLUMNS: &str = "id, store_id, status, channel, delivery_type, customer_id, \
     items, total_cents, placed_ms, updated_ms, eta_ms, eta_source, rider_id";

impl OrderService {
    /// A service over `pool` (migrated: [`crate::db::open`]), quoting ETAs from `eta`
    /// and waking the outbox relay through `outbox` after each commit.
    pub fn new(pool: AnyPool, eta: Arc<dyn EtaSource>, outbox: Arc<Notify>) -> OrderService {
        OrderService {
            pool,
            eta,
            outbox,
            clock: wall_clock_ms,
            dispatch: Arc::new(Mutex::new(Dispatcher::new(DEFAULT_MAX_RIDER_DISTANCE_M))),
            offer_timeout_ms: DEFAULT_OFFER_TIMEOUT_MS,
            updates: broadcast::channel(1024).0,
        }
    }

    /// Offers orders only to riders within `max_distance_m` of the store, and passes an
    /// offer on after `offer_timeout_ms` without an answer.
    pub fn with_dispatch(mut self, max_distance_m: f64, offer_timeout_ms: i64) -> OrderService {
        self.dispatch = Arc::new(Mutex::new(Dispatcher::new(max_distance_m)));
        self.offer_timeout_ms = offer_timeout_ms;
        self
    }

    /// Changes to orders from now on (all orders: filter by `order_id`).
    pub fn subscribe(&self) -> broadcast::Receiver<Update> {
        self.updates.subscribe()
    }

    pub(crate) fn publish(&self, order: &OrderView) {
        // Nobody following is not an error.
        let _ = self.updates.send(Update {
            order_id: order.order_id.clone(),
            kind: "status",
            data: order.to_json(),
        });
    }

    /// The database.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Fills an empty database with the stores `rushhour_producer::stores(seed, n)`
    /// draws, the recipes and opening stock. A database that has stores is left alone.
    /// Returns the number of stores added.
    pub async fn seed_catalogue(&self, seed: u64, n: u32) -> Result<usize, ServiceError> {
        let have: i64 = sqlx::query("SELECT COUNT(*) AS n FROM stores")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        if have > 0 {
            return Ok(0);
        }
        let stores = rushhour_producer::stores(seed, n);
        let mut tx = self.pool.begin().await?;
        for (product, recipe) in RECIPES {
            for (material, amount) in *recipe {
                sqlx::query(
                    "INSERT INTO recipes (product_id, material, amount) VALUES ($1, $2, $3) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(*product)
                .bind(*material)
                .bind(*amount)
                .execute(&mut *tx)
                .await?;
            }
        }
        for s in &stores {
            sqlx::query(
                "INSERT INTO stores (id, lat, lon, delivery_fee_cents) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(s.id.as_str())
            .bind(s.lat)
            .bind(s.lon)
            .bind(s.delivery_fee_cents)
            .execute(&mut *tx)
            .await?;
            for (pos, (product, price)) in s.menu.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO menu (store_id, product_id, price_cents, position) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                )
                .bind(s.id.as_str())
                .bind(*product)
                .bind(*price)
                .bind(pos as i64)
                .execute(&mut *tx)
                .await?;
            }
            for m in MATERIALS {
                sqlx::query(
                    "INSERT INTO stock (store_id, material, unit, amount, threshold, reorder_amount) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                )
                .bind(s.id.as_str())
                .bind(m.id)
                .bind(m.unit)
                .bind(m.opening)
                .bind(m.threshold)
                .bind(m.reorder)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(stores.len())
    }

    /// `GET /stores`
    pub async fn stores(&self) -> Result<Value, ServiceError> {
        let rows = sqlx::query("SELECT id, lat, lon, delivery_fee_cents FROM stores ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(json!({
                "id": r.try_get::<String, _>("id")?,
                "lat": r.try_get::<f64, _>("lat")?,
                "lon": r.try_get::<f64, _>("lon")?,
                "delivery_fee_cents": r.try_get::<i64, _>("delivery_fee_cents")?,
            }));
        }
        Ok(Value::Array(out))
    }

    /// `GET /stores/{id}`: the store with its menu, each item with its recipe.
    pub async fn store(&self, id: &str) -> Result<Value, ServiceError> {
        let Some(s) =
            sqlx::query("SELECT id, lat, lon, delivery_fee_cents FROM stores WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
        else {
            return Err(ServiceError::NotFound(format!("no store {id}")));
        };
        let rows = sqlx::query(
            "SELECT m.product_id, m.price_cents, r.material, r.amount, s.unit \
             FROM menu m JOIN recipes r ON r.product_id = m.product_id \
             JOIN stock s ON s.store_id = m.store_id AND s.material = r.material \
             WHERE m.store_id = $1 ORDER BY m.position, r.material",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let mut menu: Vec<Value> = Vec::new();
        for r in rows {
            let product: String = r.try_get("product_id")?;
            let ingredient = json!({
                "material": r.try_get::<String, _>("material")?,
                "amount": r.try_get::<i64, _>("amount")?,
                "unit": r.try_get::<String, _>("unit")?,
            });
            match menu.last_mut() {
                Some(last) if last["product_id"] == product.as_str() => {
                    if let Some(recipe) = last["recipe"].as_array_mut() {
                        recipe.push(ingredient);
                    }
                }
                _ => menu.push(json!({
                    "product_id": product,
                    "price_cents": r.try_get::<i64, _>("price_cents")?,
                    "recipe": [ingredient],
                })),
            }
        }
        Ok(json!({
            "id": s.try_get::<String, _>("id")?,
            "lat": s.try_get::<f64, _>("lat")?,
            "lon": s.try_get::<f64, _>("lon")?,
            "delivery_fee_cents": s.try_get::<i64, _>("delivery_fee_cents")?,
            "menu": menu,
        }))
    }

    async fn require_store(&self, id: &str) -> Result<i64, ServiceError> {
        sqlx::query("SELECT delivery_fee_cents FROM stores WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.try_get::<i64, _>("delivery_fee_cents"))
            .transpose()?
            .ok_or_else(|| ServiceError::NotFound(format!("no store {id}")))
    }

    /// `GET /stores/{id}/stock`
    pub async fn stock(&self, store: &str) -> Result<Value, ServiceError> {
        self.require_store(store).await?;
        let rows = sqlx::query(
            "SELECT material, unit, amount, threshold, reorder_amount FROM stock \
             WHERE store_id = $1 ORDER BY material",
        )
        .bind(store)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(stock_json)
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array)
    }

    /// `PUT /stores/{id}/stock/{material}`: sets the amount held. Below the threshold
    /// it opens a purchase order as an order would.
    pub async fn set_stock(
        &self,
        store: &str,
        material: &str,
        amount: i64,
    ) -> Result<Value, ServiceError> {
        if amount < 0 {
            return Err(bad("amount", "must not be negative"));
        }
        self.require_store(store).await?;
        let now = (self.clock)();
        let mut tx = self.pool.begin().await?;
        let Some(row) = sqlx::query(
            "UPDATE stock SET amount = $3 WHERE store_id = $1 AND material = $2 \
             RETURNING material, unit, amount, threshold, reorder_amount",
        )
        .bind(store)
        .bind(material)
        .bind(amount)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Err(ServiceError::NotFound(format!(
                "store {store} keeps no material {material}"
            )));
        };
        let out = stock_json(&row)?;
        let reordered = reorder_if_low(&mut tx, store, &row, now).await?;
        tx.commit().await?;
        if reordered {
            self.outbox.notify_one();
        }
        Ok(out)
    }

    /// `POST /orders`: places an order if the store can make it. See the module docs.
    pub async fn place(
        &self,
        req: &OrderRequest,
        idempotency_key: Option<&str>,
    ) -> Result<Placed, ServiceError> {
        if let Some(key) = idempotency_key
            && let Some(order) = self.by_key(key).await?
        {
            return replay(order, req, key);
        }
        let fee = self.require_store(&req.store_id).await?;

        // Prices and recipes of the store's menu, then what the order needs of each
        // material (a BTreeMap: taken in name order, see the module docs).
        let rows = sqlx::query(
            "SELECT m.product_id, m.price_cents, r.material, r.amount \
             FROM menu m JOIN recipes r ON r.product_id = m.product_id WHERE m.store_id = $1",
        )
        .bind(req.store_id.as_str())
        .fetch_all(&self.pool)
        .await?;
        let mut menu: HashMap<String, (i64, Vec<(String, i64)>)> = HashMap::new();
        for r in &rows {
            let entry = menu
                .entry(r.try_get("product_id")?)
                .or_insert_with(|| (0, Vec::new()));
            entry.0 = r.try_get("price_cents")?;
            entry.1.push((r.try_get("material")?, r.try_get("amount")?));
        }
        let mut needs: BTreeMap<&str, i64> = BTreeMap::new();
        let mut items = Vec::with_capacity(req.items.len());
        let mut total = 0i64;
        for line in &req.items {
            let Some((price, recipe)) = menu.get(&line.product_id) else {
                return Err(ServiceError::Rejected {
                    reason: "not_on_menu",
                    detail: format!("{} is not on the menu of {}", line.product_id, req.store_id),
                });
            };
            for (material, amount) in recipe {
                *needs.entry(material.as_str()).or_default() += amount * line.qty;
            }
            total += price * line.qty;
            items.push(json!({
                "product_id": line.product_id,
                "qty": line.qty,
                "unit_price_cents": price,
            }));
        }
        if req.delivery_type == DeliveryType::Delivery {
            total += fee;
        }

        let now = (self.clock)();
        let Eta {
            after_ms,
            source: eta_source,
        } = self.eta.quote(&req.store_id, req.delivery_type);
        let order = OrderView {
            order_id: ids::order_id(),
            store_id: req.store_id.clone(),
            status: "placed".into(),
            channel: req.channel.as_str().into(),
            delivery_type: req.delivery_type.as_str().into(),
            customer_id: req.customer_id.clone(),
            items: Value::Array(items),
            total_cents: total,
            placed_ms: now,
            updated_ms: now,
            eta_ms: now + after_ms,
            eta_source,
            rider_id: None,
        };

        let mut tx = self.pool.begin().await?;
        // The order row first: a concurrent retry with the same key waits here, holding
        // no stock (see the module docs).
        let inserted = sqlx::query(
            "INSERT INTO orders (id, store_id, status, channel, delivery_type, customer_id, items, \
             total_cents, placed_ms, updated_ms, eta_ms, eta_source, idempotency_key) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(order.order_id.as_str())
        .bind(order.store_id.as_str())
        .bind(order.status.as_str())
        .bind(order.channel.as_str())
        .bind(order.delivery_type.as_str())
        .bind(order.customer_id.clone())
        .bind(order.items.to_string())
        .bind(order.total_cents)
        .bind(order.placed_ms)
        .bind(order.updated_ms)
        .bind(order.eta_ms)
        .bind(order.eta_source.as_str())
        .bind(idempotency_key.map(str::to_owned))
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if idempotency_key.is_some() && is_unique_violation(&e) => {
                tx.rollback().await?;
                let key = idempotency_key.unwrap_or_default();
                return match self.by_key(key).await? {
                    Some(order) => replay(order, req, key),
                    None => Err(e.into()),
                };
            }
            Err(e) => return Err(e.into()),
        }

        for (material, amount) in &needs {
            let taken = sqlx::query(
                "UPDATE stock SET amount = amount - $3 \
                 WHERE store_id = $1 AND material = $2 AND amount >= $3 \
                 RETURNING material, unit, amount, threshold, reorder_amount",
            )
            .bind(req.store_id.as_str())
            .bind(*material)
            .bind(*amount)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = taken else {
                tx.rollback().await?;
                return Err(ServiceError::Rejected {
                    reason: "out_of_stock",
                    detail: format!(
                        "{} cannot make this order: not enough {material} (needs {amount})",
                        req.store_id
                    ),
                });
            };
            sqlx::query(
                "INSERT INTO reservations (order_id, material, amount) VALUES ($1, $2, $3)",
            )
            .bind(order.order_id.as_str())
            .bind(*material)
            .bind(*amount)
            .execute(&mut *tx)
            .await?;
            reorder_if_low(&mut tx, &req.store_id, &row, now).await?;
        }

        let mut ev = Event::new(ids::event_id(), EventType::OrderPlaced, now);
        ev.order_id = Some(order.order_id.as_str().into());
        ev.store_id = Some(order.store_id.as_str().into());
        ev.customer_id = order.customer_id.as_deref().map(Into::into);
        ev.channel = Some(req.channel);
        ev.delivery_type = Some(req.delivery_type);
        ev.total_cents = Some(order.total_cents);
        ev.items = Some(
            order
                .items
                .as_array()
                .into_iter()
                .flatten()
                .map(|i| Item {
                    product_id: i["product_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                        .into(),
                    qty: i["qty"].as_i64().unwrap_or_default(),
                    unit_price_cents: i["unit_price_cents"].as_i64().unwrap_or_default(),
                })
                .collect(),
        );
        enqueue_event(&mut *tx, &ev).await?;
        tx.commit().await?;
        self.outbox.notify_one();
        Ok(Placed {
            order,
            replayed: false,
        })
    }

    async fn by_key(&self, key: &str) -> Result<Option<OrderView>, ServiceError> {
        let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE idempotency_key = $1");
        let row = sqlx::query(&sql)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(OrderView::from_row).transpose()?)
    }

    /// Ends `tx`, whose guarded update of order `id` matched nothing, with the refusal
    /// `reason`, explained by `explain` from the order as it is now (or the error that
    /// finding it gave, e.g. `404` for an unknown order).
    pub(crate) async fn refuse(
        &self,
        tx: Transaction<'_, Any>,
        id: &str,
        reason: &'static str,
        explain: impl FnOnce(&OrderView) -> String,
    ) -> ServiceError {
        if let Err(e) = tx.rollback().await {
            return e.into();
        }
        match self.order(id).await {
            Ok(order) => ServiceError::Rejected {
                reason,
                detail: explain(&order),
            },
            Err(e) => e,
        }
    }

    /// `GET /orders/{id}`
    pub async fn order(&self, id: &str) -> Result<OrderView, ServiceError> {
        let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("no order {id}")))?;
        Ok(OrderView::from_row(&row)?)
    }

    /// `POST /orders/{id}/cancel`: gives back what the order reserved and emits
    /// `order_cancelled`. An order can be cancelled until it is picked up; a rider
    /// offered it or on the way to the store is free again.
    pub async fn cancel(&self, id: &str, reason: Option<&str>) -> Result<OrderView, ServiceError> {
        let now = (self.clock)();
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE orders SET status = 'cancelled', updated_ms = $2 \
             WHERE id = $1 AND status IN ('placed', 'offered', 'assigned') RETURNING store_id",
        )
        .bind(id)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = updated else {
            return Err(self
                .refuse(tx, id, "not_cancellable", |o| {
                    format!("order {id} is {} and cannot be cancelled", o.status)
                })
                .await);
        };
        let store: String = row.try_get("store_id")?;
        let held = sqlx::query(
            "SELECT material, amount FROM reservations WHERE order_id = $1 ORDER BY material",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        for r in &held {
            sqlx::query(
                "UPDATE stock SET amount = amount + $3 WHERE store_id = $1 AND material = $2",
            )
            .bind(store.as_str())
            .bind(r.try_get::<String, _>("material")?)
            .bind(r.try_get::<i64, _>("amount")?)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM reservations WHERE order_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let mut ev = Event::new(ids::event_id(), EventType::OrderCancelled, now);
        ev.order_id = Some(id.into());
        ev.store_id = Some(store.as_str().into());
        ev.reason = reason.map(Into::into);
        enqueue_event(&mut *tx, &ev).await?;
        tx.commit().await?;
        self.outbox.notify_one();
        if let Ok(mut d) = self.dispatch.lock() {
            d.release(id);
        }
        let order = self.order(id).await?;
        self.publish(&order);
        Ok(order)
    }

    /// `GET /purchase-orders[?status=open|received]`
    pub async fn purchase_orders(&self, status: Option<&str>) -> Result<Value, ServiceError> {
        let rows = match status {
            Some(s) => {
                sqlx::query(
                    "SELECT id, store_id, material, amount, status, created_ms, closed_ms \
                     FROM purchase_orders WHERE status = $1 ORDER BY created_ms, id",
                )
                .bind(s)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(
                    "SELECT id, store_id, material, amount, status, created_ms, closed_ms \
                     FROM purchase_orders ORDER BY created_ms, id",
                )
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter()
            .map(purchase_order_json)
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array)
    }

    /// `POST /purchase-orders/{id}/receive`: the delivery arrived; its amount goes
    /// into stock and the purchase order closes (so the next shortage may open another).
    pub async fn receive(&self, id: &str) -> Result<Value, ServiceError> {
        let now = (self.clock)();
        let mut tx = self.pool.begin().await?;
        let Some(open) = sqlx::query(
            "SELECT store_id, material, amount, status FROM purchase_orders WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        else {
            tx.rollback().await?;
            return Err(ServiceError::NotFound(format!("no purchase order {id}")));
        };
        let received = || ServiceError::Rejected {
            reason: "already_received",
            detail: format!("purchase order {id} was received already"),
        };
        if open.try_get::<String, _>("status")? != "open" {
            tx.rollback().await?;
            return Err(received());
        }
        // The stock row first, then the purchase order: the order in which placing an
        // order takes them (decrement, then maybe open a purchase order), so that the
        // two never wait for each other in a cycle.
        sqlx::query("UPDATE stock SET amount = amount + $3 WHERE store_id = $1 AND material = $2")
            .bind(open.try_get::<String, _>("store_id")?)
            .bind(open.try_get::<String, _>("material")?)
            .bind(open.try_get::<i64, _>("amount")?)
            .execute(&mut *tx)
            .await?;
        let Some(po) = sqlx::query(
            "UPDATE purchase_orders SET status = 'received', closed_ms = $2 \
             WHERE id = $1 AND status = 'open' \
             RETURNING id, store_id, material, amount, status, created_ms, closed_ms",
        )
        .bind(id)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?
        else {
            // Received by someone else meanwhile: the stock goes back as it was.
            tx.rollback().await?;
            return Err(received());
        };
        tx.commit().await?;
        purchase_order_json(&po)
    }
}

fn replay(order: OrderView, req: &OrderRequest, key: &str) -> Result<Placed, ServiceError> {
    if order.matches(req) {
        Ok(Placed {
            order,
            replayed: true,
        })
    } else {
        Err(ServiceError::KeyReused(format!(
            "Idempotency-Key {key:?} was used for a different order ({})",
            order.order_id
        )))
    }
}

fn stock_json(r: &AnyRow) -> Result<Value, ServiceError> {
    Ok(json!({
        "material": r.try_get::<String, _>("material")?,
        "unit": r.try_get::<String, _>("unit")?,
        "amount": r.try_get::<i64, _>("amount")?,
        "threshold": r.try_get::<i64, _>("threshold")?,
        "reorder_amount": r.try_get::<i64, _>("reorder_amount")?,
    }))
}

fn purchase_order_json(r: &AnyRow) -> Result<Value, ServiceError> {
    let closed: Option<i64> = r.try_get("closed_ms")?;
    Ok(json!({
        "id": r.try_get::<String, _>("id")?,
        "store_id": r.try_get::<String, _>("store_id")?,
        "material": r.try_get::<String, _>("material")?,
        "amount": r.try_get::<i64, _>("amount")?,
        "status": r.try_get::<String, _>("status")?,
        "created_at": format_millis(r.try_get("created_ms")?),
        "received_at": closed.map(format_millis),
    }))
}

/// Opens a purchase order for the material of `stock_row` (a `RETURNING` row of the
/// stock table) when it is below its threshold and none is open; queues its event.
/// Returns whether it opened one.
async fn reorder_if_low(
    tx: &mut Transaction<'static, Any>,
    store: &str,
    stock_row: &AnyRow,
    now: i64,
) -> Result<bool, ServiceError> {
    let amount: i64 = stock_row.try_get("amount")?;
    let threshold: i64 = stock_row.try_get("threshold")?;
    if amount >= threshold {
        return Ok(false);
    }
    let material: String = stock_row.try_get("material")?;
    let unit: String = stock_row.try_get("unit")?;
    let reorder: i64 = stock_row.try_get("reorder_amount")?;
    let id = ids::purchase_order_id();
    let opened = sqlx::query(
        "INSERT INTO purchase_orders (id, store_id, material, amount, status, created_ms) \
         VALUES ($1, $2, $3, $4, 'open', $5) \
         ON CONFLICT (store_id, material) WHERE status = 'open' DO NOTHING",
    )
    .bind(id.as_str())
    .bind(store)
    .bind(material.as_str())
    .bind(reorder)
    .bind(now)
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1;
    if opened {
        let payload = json!({
            "event_id": ids::event_id(),
            "event_type": PURCHASE_ORDER_CREATED,
            "event_time": format_millis(now),
            "purchase_order_id": id,
            "store_id": store,
            "material": material,
            "amount": reorder,
            "unit": unit,
            "stock_left": amount,
        });
        enqueue(
            &mut **tx,
            PURCHASE_ORDERS_TOPIC,
            store,
            &payload.to_string(),
        )
        .await?;
    }
    Ok(opened)
}

/// Adds `ev` to the outbox through `db`: a transaction's connection (the event commits
/// with the change) or the pool (an event that is the whole change, one statement).
pub(crate) async fn enqueue_event<'c>(
    db: impl sqlx::Executor<'c, Database = Any>,
    ev: &Event<'_>,
) -> Result<(), ServiceError> {
    let mut payload = String::with_capacity(256);
    rushhour_schemas::encode(ev, &mut payload);
    enqueue(db, ORDERS_TOPIC, ev.partition_key(), &payload).await
}

async fn enqueue<'c>(
    db: impl sqlx::Executor<'c, Database = Any>,
    topic: &str,
    key: &str,
    payload: &str,
) -> Result<(), ServiceError> {
    sqlx::query("INSERT INTO outbox (topic, key, payload) VALUES ($1, $2, $3)")
        .bind(topic)
        .bind(key)
        .bind(payload)
        .execute(db)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(body: &str) -> String {
        match OrderRequest::parse(body.as_bytes()) {
            Err(ServiceError::BadRequest { field, .. }) => field,
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn a_malformed_request_names_the_field() {
        assert_eq!(field_of("{"), "body");
        assert_eq!(field_of("[]"), "body");
        assert_eq!(field_of(r#"{"items":[{"product_id":"x"}]}"#), "store_id");
        assert_eq!(field_of(r#"{"store_id":7,"items":[]}"#), "store_id");
        assert_eq!(field_of(r#"{"store_id":"s"}"#), "items");
        assert_eq!(field_of(r#"{"store_id":"s","items":[]}"#), "items");
        assert_eq!(
            field_of(r#"{"store_id":"s","items":[{"qty":1}]}"#),
            "items[0].product_id"
        );
        assert_eq!(
            field_of(r#"{"store_id":"s","items":[{"product_id":"a"},{"product_id":"b","qty":0}]}"#),
            "items[1].qty"
        );
        assert_eq!(
            field_of(r#"{"store_id":"s","items":[{"product_id":"a","qty":1.5}]}"#),
            "items[0].qty"
        );
        assert_eq!(
            field_of(r#"{"store_id":"s","items":[{"product_id":"a"}],"channel":"fax"}"#),
            "channel"
        );
        assert_eq!(
            field_of(r#"{"store_id":"s","items":[{"product_id":"a"}],"delivery_type":1}"#),
            "delivery_type"
        );
    }

    #[test]
    fn defaults_are_one_of_each_online_and_delivered() {
        let req =
            OrderRequest::parse(br#"{"store_id":"store-001","items":[{"product_id":"cola"}]}"#)
                .expect("valid");
        assert_eq!(
            req.items,
            vec![Line {
                product_id: "cola".into(),
                qty: 1
            }]
        );
        assert_eq!(req.channel, Channel::Online);
        assert_eq!(req.delivery_type, DeliveryType::Delivery);
        assert_eq!(req.customer_id, None);
    }
}
