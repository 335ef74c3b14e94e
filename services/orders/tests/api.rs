//! The order service through its HTTP API, on the embedded SQLite and on a real
//! PostgreSQL (`infra/local-stack.sh start postgres`; `RUSHHOUR_POSTGRES` names it,
//! each test makes a database of its own). Events go to a file, read back after stop.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use futures::future::join_all;
use reqwest::{Client, StatusCode};
use rushhour_orders::{Routes, Running, ServeConfig};
use serde_json::{Value, json};
use sqlx::Connection;

fn postgres_admin_url() -> String {
    std::env::var("RUSHHOUR_POSTGRES")
        .unwrap_or_else(|_| "postgres://rushhour@127.0.0.1:55432/rushhour".into())
}

#[derive(Clone, Copy, Debug)]
enum Db {
    Sqlite,
    Postgres,
}

/// A fresh database of `kind` for `test`.
async fn database(kind: Db, test: &str, dir: &std::path::Path) -> String {
    match kind {
        Db::Sqlite => format!("sqlite:{}", dir.join("services.db").display()),
        Db::Postgres => {
            sqlx::any::install_default_drivers();
            let admin = postgres_admin_url();
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let name = format!("t_{test}_{}_{nanos}", std::process::id());
            let mut conn = sqlx::AnyConnection::connect(&admin)
                .await
                .unwrap_or_else(|e| {
                    panic!("PostgreSQL at {admin} ({e}): run infra/local-stack.sh start postgres")
                });
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .unwrap();
            let base = admin.rsplit_once('/').unwrap().0;
            format!("{base}/{name}")
        }
    }
}

struct Svc {
    running: Running,
    db: String,
    base: String,
    http: Client,
    events: PathBuf,
    _dir: tempfile::TempDir,
}

impl Svc {
    /// Services on a fresh database of `kind`, seeded with 40 stores.
    async fn start(kind: Db, test: &str) -> Svc {
        let dir = tempfile::tempdir().unwrap();
        let db = database(kind, test, dir.path()).await;
        let svc = Svc::on(&db, dir).await;
        assert_eq!(svc.running.seeded, 40);
        svc
    }

    /// Services on `db` (seeded if empty), events to files in `dir`.
    async fn on(db: &str, dir: tempfile::TempDir) -> Svc {
        let events = dir.path().join("events.jsonl");
        let running = rushhour_orders::start(ServeConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            db: db.to_owned(),
            routes: Routes::new(format!("file:{}", events.display()).parse().unwrap()),
            sink: Default::default(),
            seed: 0,
            stores: 40,
            max_connections: 16,
            eta_lake: None,
            eta_refresh: std::time::Duration::from_secs(30),
            max_rider_distance_m: 5_000.0,
            offer_timeout: std::time::Duration::from_secs(30),
        })
        .await
        .unwrap();
        Svc {
            base: format!("http://{}", running.addr),
            running,
            db: db.to_owned(),
            http: Client::new(),
            events,
            _dir: dir,
        }
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap())
    }

    async fn post(&self, path: &str, body: Value, key: Option<&str>) -> (StatusCode, Value) {
        let mut req = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        (status, r.json().await.unwrap())
    }

    async fn put_stock(&self, store: &str, material: &str, amount: i64) {
        let r = self
            .http
            .put(format!("{}/stores/{store}/stock/{material}", self.base))
            .json(&json!({ "amount": amount }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }

    async fn stock_of(&self, store: &str, material: &str) -> Value {
        let (status, stock) = self.get(&format!("/stores/{store}/stock")).await;
        assert_eq!(status, StatusCode::OK);
        stock
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["material"] == material)
            .cloned()
            .unwrap()
    }

    /// Stops the services and returns the events sent: (orders stream, purchase orders).
    async fn stop(self) -> (Vec<Value>, Vec<Value>) {
        let sent = self.running.stop().await.unwrap();
        let read = |p: PathBuf| -> Vec<Value> {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        let orders = read(self.events.clone());
        let po = read(self.events.with_file_name("events-purchase-orders.jsonl"));
        assert_eq!(sent as usize, orders.len() + po.len());
        (orders, po)
    }
}

/// A store and a product on its menu made of one material only (a drink), with that
/// material's amount per unit and threshold.
async fn single_material_product(svc: &Svc) -> (String, String, String, i64, i64) {
    let (_, stores) = svc.get("/stores").await;
    for s in stores.as_array().unwrap() {
        let id = s["id"].as_str().unwrap();
        let (_, store) = svc.get(&format!("/stores/{id}")).await;
        for item in store["menu"].as_array().unwrap() {
            let recipe = item["recipe"].as_array().unwrap();
            if recipe.len() == 1 {
                let material = recipe[0]["material"].as_str().unwrap().to_owned();
                let threshold = svc.stock_of(id, &material).await["threshold"]
                    .as_i64()
                    .unwrap();
                return (
                    id.to_owned(),
                    item["product_id"].as_str().unwrap().to_owned(),
                    material,
                    recipe[0]["amount"].as_i64().unwrap(),
                    threshold,
                );
            }
        }
    }
    panic!("no store sells a single-material product");
}

fn order(store: &str, product: &str, qty: i64) -> Value {
    json!({"store_id": store, "items": [{"product_id": product, "qty": qty}],
           "channel": "online", "delivery_type": "delivery"})
}

async fn fifty_orders_for_ten(kind: Db) {
    let svc = Svc::start(kind, "fifty").await;
    let (store, product, material, per_unit, _) = single_material_product(&svc).await;
    svc.put_stock(&store, &material, 10 * per_unit).await;

    let attempts = (0..50).map(|_| svc.post("/orders", order(&store, &product, 1), None));
    let results = join_all(attempts).await;
    let accepted: Vec<&Value> = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .map(|(_, b)| b)
        .collect();
    let rejected = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::CONFLICT)
        .count();
    assert_eq!(accepted.len(), 10, "{kind:?}: {results:?}");
    assert_eq!(rejected, 40, "{kind:?}");
    for (status, body) in &results {
        if *status == StatusCode::CONFLICT {
            assert_eq!(body["reason"], "out_of_stock", "{body}");
        }
    }
    assert_eq!(svc.stock_of(&store, &material).await["amount"], 0);

    let (events, _) = svc.stop().await;
    let placed: Vec<&Value> = events
        .iter()
        .filter(|e| e["event_type"] == "order_placed")
        .collect();
    assert_eq!(placed.len(), 10);
    let mut ids: Vec<&str> = placed
        .iter()
        .map(|e| e["order_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let mut want: Vec<&str> = accepted
        .iter()
        .map(|b| b["order_id"].as_str().unwrap())
        .collect();
    want.sort_unstable();
    assert_eq!(ids, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_orders_for_ten_portions_accept_ten_on_postgres() {
    fifty_orders_for_ten(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_orders_for_ten_portions_accept_ten_on_sqlite() {
    fifty_orders_for_ten(Db::Sqlite).await;
}

async fn reorder_once(kind: Db) {
    let svc = Svc::start(kind, "reorder").await;
    let (store, product, material, per_unit, threshold) = single_material_product(&svc).await;
    // Five units above the threshold: the sixth order crosses it, and the ones after it
    // find the purchase order open (up to twenty orders, as many as the stock holds).
    let stock = threshold + 5 * per_unit;
    svc.put_stock(&store, &material, stock).await;
    let n = (stock / per_unit).min(20) as usize;
    assert!(n > 6);
    let (_, open) = svc.get("/purchase-orders?status=open").await;
    assert_eq!(open, json!([]));

    let attempts = (0..n).map(|_| svc.post("/orders", order(&store, &product, 1), None));
    let results = join_all(attempts).await;
    assert!(
        results.iter().all(|(s, _)| *s == StatusCode::CREATED),
        "{results:?}"
    );

    let (_, open) = svc.get("/purchase-orders?status=open").await;
    let open = open.as_array().unwrap().clone();
    assert_eq!(open.len(), 1, "{kind:?}: {open:?}");
    assert_eq!(open[0]["store_id"], store.as_str());
    assert_eq!(open[0]["material"], material.as_str());

    // Received, it refills the stock; the next shortage may open another.
    let po = open[0]["id"].as_str().unwrap();
    let before = svc.stock_of(&store, &material).await["amount"]
        .as_i64()
        .unwrap();
    let (status, received) = svc
        .post(&format!("/purchase-orders/{po}/receive"), json!({}), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{received}");
    let after = svc.stock_of(&store, &material).await["amount"]
        .as_i64()
        .unwrap();
    assert_eq!(after, before + open[0]["amount"].as_i64().unwrap());
    let (status, again) = svc
        .post(&format!("/purchase-orders/{po}/receive"), json!({}), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");

    let (events, po_events) = svc.stop().await;
    assert_eq!(events.len(), n);
    assert_eq!(po_events.len(), 1, "{po_events:?}");
    assert_eq!(po_events[0]["event_type"], "purchase_order_created");
    assert_eq!(po_events[0]["purchase_order_id"], po);
}

/// Receiving a purchase order while orders at its store take stock and find it open: the
/// two take the stock row and the purchase order in one order, so PostgreSQL never has
/// to break a deadlock (which would answer 500).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiving_while_orders_reorder_never_deadlocks_on_postgres() {
    let svc = Svc::start(Db::Postgres, "receive").await;
    let (store, product, material, per_unit, threshold) = single_material_product(&svc).await;
    let k = ((threshold - 1) / per_unit).min(6);
    assert!(k >= 2, "threshold {threshold}, {per_unit} per unit");
    for round in 0..25 {
        // Below the threshold: a purchase order opens, and k orders can still be made.
        svc.put_stock(&store, &material, k * per_unit).await;
        let (_, open) = svc.get("/purchase-orders?status=open").await;
        let po = open[0]["id"].as_str().unwrap().to_owned();
        let receive = async {
            let path = format!("/purchase-orders/{po}/receive");
            vec![svc.post(&path, json!({}), None).await]
        };
        let orders =
            join_all((0..k).map(|_| svc.post("/orders", order(&store, &product, 1), None)));
        let (received, placed) = futures::join!(receive, orders);
        for (status, body) in received.iter().chain(&placed) {
            assert!(
                [StatusCode::OK, StatusCode::CREATED, StatusCode::CONFLICT].contains(status),
                "round {round}: {status} {body}"
            );
        }
    }
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_order_opens_once_under_concurrency_on_postgres() {
    reorder_once(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_order_opens_once_under_concurrency_on_sqlite() {
    reorder_once(Db::Sqlite).await;
}

/// Two service processes on one PostgreSQL: one relay sends everything (each event
/// once, in commit order), the other takes over when the first stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_postgres_send_each_event_once_and_take_over() {
    let a = Svc::start(Db::Postgres, "relays").await;
    // a's relay takes the lock on its first round, right after start.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let b = Svc::on(&a.db, tempfile::tempdir().unwrap()).await;
    assert_eq!(b.running.seeded, 0);
    let (store, product, _, _, _) = single_material_product(&a).await;
    let mut placed = Vec::new();
    for i in 0..20 {
        let svc = if i % 2 == 0 { &a } else { &b };
        let (status, body) = svc.post("/orders", order(&store, &product, 1), None).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        placed.push(body["order_id"].as_str().unwrap().to_owned());
    }
    // `a` started first and holds the lock: it sends b's events too. Once it stops,
    // b's relay takes over.
    let (from_a, _) = a.stop().await;
    for _ in 0..10 {
        let (status, body) = b.post("/orders", order(&store, &product, 1), None).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        placed.push(body["order_id"].as_str().unwrap().to_owned());
    }
    // The new holder sends within a second or two; stop drains what is left.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let (from_b, _) = b.stop().await;
    let ids = |evs: &[Value]| -> Vec<String> {
        evs.iter()
            .map(|e| e["order_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&from_a), placed[..20], "a sent the first 20, in order");
    assert_eq!(ids(&from_b), placed[20..], "b sent the rest, in order");
}

async fn retried_once(kind: Db) {
    let svc = Svc::start(kind, "retry").await;
    let (store, product, material, per_unit, _) = single_material_product(&svc).await;
    let before = svc.stock_of(&store, &material).await["amount"]
        .as_i64()
        .unwrap();
    let body = order(&store, &product, 2);
    let retries = (0..10).map(|_| svc.post("/orders", body.clone(), Some("checkout-42")));
    let results = join_all(retries).await;
    let ids: Vec<&Value> = results.iter().map(|(_, b)| &b["order_id"]).collect();
    assert!(
        results.iter().all(|(s, _)| *s == StatusCode::CREATED),
        "{results:?}"
    );
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    let after = svc.stock_of(&store, &material).await["amount"]
        .as_i64()
        .unwrap();
    assert_eq!(before - after, 2 * per_unit);

    // The same key for another order is refused; another key orders anew.
    let (status, err) = svc
        .post("/orders", order(&store, &product, 1), Some("checkout-42"))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    let (status, _) = svc.post("/orders", body.clone(), Some("checkout-43")).await;
    assert_eq!(status, StatusCode::CREATED);

    let (events, _) = svc.stop().await;
    assert_eq!(events.len(), 2, "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_request_orders_once_on_postgres() {
    retried_once(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_request_orders_once_on_sqlite() {
    retried_once(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_say_what_is_wrong_and_cancelling_gives_stock_back() {
    let svc = Svc::start(Db::Sqlite, "errors").await;
    let (store, product, material, per_unit, _) = single_material_product(&svc).await;

    let (status, err) = svc
        .post(
            "/orders",
            json!({"store_id": store, "items": [{"product_id": product, "qty": 0}]}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["field"], "items[0].qty", "{err}");
    let (status, err) = svc
        .post("/orders", order("store-999", &product, 1), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");
    let (status, err) = svc.post("/orders", order(&store, "caviar", 1), None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(err["reason"], "not_on_menu", "{err}");
    let (status, _) = svc.get("/orders/ord-nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = svc.get("/stores/store-999/stock").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A placed order shows its status and ETA; cancelled, its stock comes back.
    let before = svc.stock_of(&store, &material).await["amount"]
        .as_i64()
        .unwrap();
    let (status, placed) = svc.post("/orders", order(&store, &product, 3), None).await;
    assert_eq!(status, StatusCode::CREATED, "{placed}");
    assert_eq!(placed["status"], "placed");
    assert_eq!(placed["eta"]["source"], "default");
    assert!(placed["eta"]["minutes"].as_f64().unwrap() > 0.0);
    let id = placed["order_id"].as_str().unwrap();
    let held = svc.stock_of(&store, &material).await["amount"]
        .as_i64()
        .unwrap();
    assert_eq!(before - held, 3 * per_unit);
    let (status, got) = svc.get(&format!("/orders/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got, placed);

    let (status, cancelled) = svc
        .post(
            &format!("/orders/{id}/cancel"),
            json!({"reason": "customer_request"}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(
        svc.stock_of(&store, &material).await["amount"]
            .as_i64()
            .unwrap(),
        before
    );
    let (status, again) = svc
        .post(&format!("/orders/{id}/cancel"), json!({}), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(again["reason"], "not_cancellable");

    let (events, _) = svc.stop().await;
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["order_placed", "order_cancelled"]);
    assert_eq!(events[1]["reason"], "customer_request");
    assert_eq!(events[0]["total_cents"], placed["total_cents"]);
}

/// Reads a server-sent-event stream to its end: (event, data) pairs. `started` is told
/// once the first event (the order's state at subscription) has arrived.
async fn read_sse(
    http: Client,
    url: String,
    started: tokio::sync::oneshot::Sender<()>,
) -> Vec<(String, Value)> {
    let mut resp = http.get(url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut text = String::new();
    let mut started = Some(started);
    while let Some(chunk) = resp.chunk().await.unwrap() {
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        if text.contains("\n\n")
            && let Some(s) = started.take()
        {
            let _ = s.send(());
        }
    }
    text.split("\n\n")
        .filter(|block| block.contains("data:"))
        .map(|block| {
            let mut event = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event:") {
                    event = e.trim().to_owned();
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim());
                }
            }
            (event, serde_json::from_str(&data).unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_goes_to_the_nearest_rider_then_the_next_and_is_followed_live() {
    let svc = Svc::start(Db::Sqlite, "delivery").await;
    let (_, store) = svc.get("/stores/store-001").await;
    let (lat, lon) = (
        store["lat"].as_f64().unwrap(),
        store["lon"].as_f64().unwrap(),
    );
    let product = store["menu"][0]["product_id"].clone();
    let ping = async |rider: &str, dlat: f64| {
        svc.post(
            &format!("/riders/{rider}/location"),
            json!({"lat": lat + dlat, "lon": lon, "speed_mps": 4.5}),
            None,
        )
        .await
    };
    assert_eq!(ping("rider-near", 0.001).await.0, StatusCode::OK); // ~110 m
    assert_eq!(ping("rider-next", 0.003).await.0, StatusCode::OK); // ~330 m
    assert_eq!(ping("rider-far", 0.1).await.0, StatusCode::OK); // ~11 km: out of reach

    let (status, placed) = svc
        .post(
            "/orders",
            json!({"store_id": "store-001", "items": [{"product_id": product}]}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{placed}");
    let id = placed["order_id"].as_str().unwrap().to_owned();

    let (started_tx, started) = tokio::sync::oneshot::channel();
    let follower = tokio::spawn(read_sse(
        svc.http.clone(),
        format!("{}/orders/{id}/events", svc.base),
        started_tx,
    ));
    started.await.unwrap();

    let (status, o) = svc
        .post(&format!("/orders/{id}/ready"), json!({}), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{o}");
    assert_eq!(
        (o["status"].as_str(), o["rider_id"].as_str()),
        (Some("offered"), Some("rider-near"))
    );
    let (status, o) = svc
        .post(
            &format!("/orders/{id}/offer/decline"),
            json!({"rider_id": "rider-near"}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{o}");
    assert_eq!(o["rider_id"], "rider-next");
    let (status, o) = svc
        .post(
            &format!("/orders/{id}/offer/accept"),
            json!({"rider_id": "rider-near"}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{o}");
    let (status, o) = svc
        .post(
            &format!("/orders/{id}/offer/accept"),
            json!({"rider_id": "rider-next"}),
            None,
        )
        .await;
    assert_eq!(
        (status, o["status"].as_str()),
        (StatusCode::OK, Some("assigned"))
    );
    let (status, o) = svc
        .post(
            &format!("/orders/{id}/deliver"),
            json!({"rider_id": "rider-next"}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "not picked up yet: {o}");
    let (status, _) = svc
        .post(
            &format!("/orders/{id}/pickup"),
            json!({"rider_id": "rider-next"}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, moving) = ping("rider-next", 0.002).await;
    assert_eq!(
        moving["order_id"].as_str(),
        Some(id.as_str()),
        "{status} {moving}"
    );
    let (status, o) = svc
        .post(
            &format!("/orders/{id}/deliver"),
            json!({"rider_id": "rider-next"}),
            None,
        )
        .await;
    assert_eq!(
        (status, o["status"].as_str()),
        (StatusCode::OK, Some("delivered"))
    );

    // The live stream showed every status in order, the rider's position, and ended.
    let seen = tokio::time::timeout(std::time::Duration::from_secs(10), follower)
        .await
        .expect("the stream ends after delivered")
        .unwrap();
    let steps: Vec<String> = seen
        .iter()
        .map(|(event, data)| match event.as_str() {
            "status" => format!(
                "{}:{}",
                data["status"].as_str().unwrap(),
                data["rider_id"].as_str().unwrap_or("-")
            ),
            _ => format!("{event}:{}", data["rider_id"].as_str().unwrap()),
        })
        .collect();
    assert_eq!(
        steps,
        [
            "placed:-",
            "offered:rider-near",
            "offered:rider-next",
            "assigned:rider-next",
            "picked_up:rider-next",
            "rider:rider-next",
            "delivered:rider-next",
        ]
    );

    // Only a rider beyond reach: the delivery is declined, the order cancelled.
    assert_eq!(
        svc.post(
            "/riders/rider-near/availability",
            json!({"available": false}),
            None
        )
        .await
        .0,
        StatusCode::OK
    );
    assert_eq!(
        svc.post(
            "/riders/rider-next/availability",
            json!({"available": false}),
            None
        )
        .await
        .0,
        StatusCode::OK
    );
    let (_, second) = svc
        .post(
            "/orders",
            json!({"store_id": "store-001", "items": [{"product_id": product}]}),
            None,
        )
        .await;
    let second_id = second["order_id"].as_str().unwrap();
    let (status, o) = svc
        .post(&format!("/orders/{second_id}/ready"), json!({}), None)
        .await;
    assert_eq!(
        (status, o["status"].as_str()),
        (StatusCode::OK, Some("cancelled")),
        "{o}"
    );

    let (events, _) = svc.stop().await;
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "rider_location",
            "rider_location",
            "rider_location",
            "order_placed",
            "order_picked_up",
            "rider_location",
            "order_delivered",
            "order_placed",
            "order_cancelled",
        ]
    );
    assert_eq!(events[5]["order_id"].as_str(), Some(id.as_str()));
    assert_eq!(events[6]["rider_id"], "rider-next");
    assert_eq!(events[8]["reason"], "no_rider_nearby");
}
