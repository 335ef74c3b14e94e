//! The ordering services end to end: `serve` → `log:` → `process` → lake, and the
//! curated tables hold exactly what the services accepted.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::thread::JoinHandle;

use serde_json::{Value, json};

use super::{bin, ok, query_json, signal, stdout, summary};

/// `process --from STREAM --lake LAKE --until-end --quiet`, which must succeed.
fn process_to_end(stream: &str, lake: &std::path::Path) -> std::process::Output {
    ok(&[
        "process",
        "--from",
        stream,
        "--lake",
        lake.to_str().unwrap(),
        "--until-end",
        "--quiet",
    ])
}

/// One HTTP/1.1 request (the test needs no client library): status and JSON body.
fn http(addr: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// A running `rushhour serve`, killed if the test ends without stopping it (a failed
/// assertion must not leave a server holding the test harness's output open).
struct Served {
    child: Child,
    addr: String,
    stderr: Option<JoinHandle<Vec<String>>>,
}

impl Served {
    /// Stops it as an operator would (SIGTERM); its stderr after the address line.
    fn stop(mut self) -> String {
        signal(&self.child, "-TERM");
        let status = self.child.wait().unwrap();
        let said = self.stderr.take().unwrap().join().unwrap().join("\n");
        assert!(status.success(), "serve: {status}: {said}");
        said
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `rushhour serve ARGS` on a free port.
fn serve(args: &[&str]) -> Served {
    let mut child = bin()
        .args(["serve", "--addr", "127.0.0.1:0"])
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("serve printed its address").unwrap();
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.split(' ').next().unwrap().to_owned();
        }
    };
    let rest = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    Served {
        child,
        addr,
        stderr: Some(rest),
    }
}

#[test]
fn served_orders_flow_through_the_pipeline_into_the_lake() {
    let dir = tempfile::tempdir().unwrap();
    let stream = dir.path().join("stream");
    let lake = dir.path().join("lake");
    let db = format!("sqlite:{}", dir.path().join("services.db").display());
    let to = format!("log:{}", stream.display());
    let served = serve(&["--db", &db, "--to", &to]);
    let addr = served.addr.clone();

    // Orders at five stores, two products each, some cancelled; one store runs out.
    let mut want: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new(); // placed, revenue, cancelled
    let mut placed_ids = Vec::new();
    for n in 0..30 {
        let store = format!("store-00{}", 1 + n % 5);
        let (status, s) = http(&addr, "GET", &format!("/stores/{store}"), None);
        assert_eq!(status, 200, "{s}");
        let menu = s["menu"].as_array().unwrap();
        let items = json!([
            {"product_id": menu[n % menu.len()]["product_id"], "qty": 1 + (n % 3) as i64},
            {"product_id": menu[(n + 1) % menu.len()]["product_id"], "qty": 1},
        ]);
        let delivery = if n % 4 == 0 { "pickup" } else { "delivery" };
        let (status, o) = http(
            &addr,
            "POST",
            "/orders",
            Some(&json!({"store_id": store, "items": items, "delivery_type": delivery})),
        );
        assert_eq!(status, 201, "{o}");
        let w = want.entry(store.clone()).or_default();
        w.0 += 1;
        w.1 += o["total_cents"].as_i64().unwrap();
        placed_ids.push((store, o["order_id"].as_str().unwrap().to_owned()));
    }
    for (store, id) in placed_ids.iter().step_by(7) {
        let (status, c) = http(&addr, "POST", &format!("/orders/{id}/cancel"), None);
        assert_eq!(status, 200, "{c}");
        want.get_mut(store).unwrap().2 += 1;
    }
    let (status, store) = http(&addr, "GET", "/stores/store-006", None);
    assert_eq!(status, 200);
    let product = &store["menu"][0];
    for m in product["recipe"].as_array().unwrap() {
        let path = format!(
            "/stores/store-006/stock/{}",
            m["material"].as_str().unwrap()
        );
        assert_eq!(
            http(&addr, "PUT", &path, Some(&json!({"amount": 0}))).0,
            200
        );
    }
    let (status, refused) = http(
        &addr,
        "POST",
        "/orders",
        Some(&json!({"store_id": "store-006", "items": [{"product_id": product["product_id"]}]})),
    );
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["reason"], "out_of_stock");

    let said = served.stop();
    // Every placement and cancellation, and a purchase order for each material set to 0.
    let events = 30 + 5;
    let purchase_orders = product["recipe"].as_array().unwrap().len();
    assert!(
        said.contains(&format!("{} events sent", events + purchase_orders)),
        "{said}"
    );

    let o = process_to_end(&format!("log:{}", stream.display()), &lake);
    let s = summary(&o);
    assert_eq!(s["accepted"], events, "{}", stdout(&o));
    assert_eq!(s["invalid"], 0);

    let rows = query_json(
        &lake,
        "SELECT store_id, CAST(SUM(orders_placed) AS BIGINT) AS placed, \
         CAST(SUM(revenue_cents) AS BIGINT) AS revenue, \
         CAST(SUM(orders_cancelled) AS BIGINT) AS cancelled \
         FROM store_minute GROUP BY store_id ORDER BY store_id",
    );
    let got: BTreeMap<String, (i64, i64, i64)> = rows
        .iter()
        .map(|r| {
            (
                r["store_id"].as_str().unwrap().to_owned(),
                (
                    r["placed"].as_i64().unwrap(),
                    r["revenue"].as_i64().unwrap(),
                    r["cancelled"].as_i64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(got, want);
}

#[test]
fn etas_are_quoted_from_the_pipelines_own_delivery_times() {
    let dir = tempfile::tempdir().unwrap();
    let stream = format!("log:{}", dir.path().join("stream").display());
    let lake = dir.path().join("lake");
    ok(&[
        "generate", "--to", &stream, "--orders", "400", "--seed", "1",
    ]);
    process_to_end(&stream, &lake);
    let newest = query_json(
        &lake,
        "SELECT store_id, avg_total_s FROM store_delivery_5m s \
         WHERE avg_total_s IS NOT NULL AND window_end = (SELECT MAX(window_end) \
         FROM store_delivery_5m t WHERE t.store_id = s.store_id AND t.avg_total_s IS NOT NULL) \
         ORDER BY store_id LIMIT 1",
    );
    let store = newest[0]["store_id"].as_str().unwrap();
    let avg_s = newest[0]["avg_total_s"].as_f64().unwrap();

    let db = format!("sqlite:{}", dir.path().join("services.db").display());
    let to = format!("file:{}", dir.path().join("served.jsonl").display());
    let served = serve(&[
        "--db",
        &db,
        "--to",
        &to,
        "--eta-lake",
        lake.to_str().unwrap(),
    ]);
    let addr = served.addr.clone();
    let (_, s) = http(&addr, "GET", &format!("/stores/{store}"), None);
    let product = s["menu"][0]["product_id"].clone();
    let (status, o) = http(
        &addr,
        "POST",
        "/orders",
        Some(&json!({"store_id": store, "items": [{"product_id": product}]})),
    );
    assert_eq!(status, 201, "{o}");
    let source = o["eta"]["source"].as_str().unwrap();
    assert!(
        source.starts_with(&format!("store_delivery_5m: {store}")),
        "{o}"
    );
    let minutes = o["eta"]["minutes"].as_f64().unwrap();
    assert!(
        (minutes - avg_s / 60.0).abs() < 0.06,
        "{minutes} vs {avg_s} s"
    );
    // Another store is quoted from the lake too: its own newest window, or the city's.
    let (status, o) = http(
        &addr,
        "POST",
        "/orders",
        Some(
            &json!({"store_id": "store-040", "items": [{"product_id": http(&addr, "GET", "/stores/store-040", None).1["menu"][0]["product_id"]}]}),
        ),
    );
    assert_eq!(status, 201, "{o}");
    let source = o["eta"]["source"].as_str().unwrap();
    assert!(source.starts_with("store_delivery_5m: "), "{o}");
    served.stop();
}

#[test]
fn the_whole_loop_runs_from_generate_via_the_services_into_the_lake() {
    let dir = tempfile::tempdir().unwrap();
    let stream = format!("log:{}", dir.path().join("stream").display());
    let lake = dir.path().join("lake");
    let db = format!("sqlite:{}", dir.path().join("services.db").display());
    let served = serve(&["--db", &db, "--to", &stream]);
    let addr = served.addr.clone();

    // The same seed as serve's catalogue (its default, 1): the same stores and menus.
    // Run twice: the second run is new customers (its own idempotency keys), not
    // retries of the first, and runs from one client.
    let drive = |orders: &str, clients: &str| {
        let o = ok(&[
            "generate",
            "--via",
            &format!("http://{addr}"),
            "--orders",
            orders,
            "--seed",
            "1",
            "--clients",
            clients,
        ]);
        let drove = summary(&o);
        assert_eq!(drove["errors"], 0, "{drove}");
        assert_eq!(
            drove["picked_up"], drove["delivered"],
            "every pickup is delivered by the end: {drove}"
        );
        drove
    };
    let (one, two) = (drive("60", "3"), drive("10", "1"));
    let n = |k: &str| one[k].as_i64().unwrap() + two[k].as_i64().unwrap();
    let (accepted, delivered) = (n("accepted"), n("delivered"));
    assert!(one["accepted"].as_i64().unwrap() > 50, "{one}");
    assert!(two["accepted"].as_i64().unwrap() > 5, "{two}");
    assert!(delivered > 0, "{one} {two}");

    served.stop();
    process_to_end(&stream, &lake);
    let totals = query_json(
        &lake,
        "SELECT CAST(SUM(orders_placed) AS BIGINT) AS placed, \
         CAST(SUM(orders_delivered) AS BIGINT) AS delivered, \
         CAST(SUM(orders_cancelled) AS BIGINT) AS cancelled FROM store_minute",
    );
    assert_eq!(
        totals[0]["placed"].as_i64().unwrap(),
        accepted,
        "{totals:?}"
    );
    assert_eq!(
        totals[0]["delivered"].as_i64().unwrap(),
        delivered,
        "{totals:?}"
    );
    let cancelled = n("cancelled") + n("declined");
    assert_eq!(
        totals[0]["cancelled"].as_i64().unwrap(),
        cancelled,
        "{totals:?}"
    );
    let deliveries = query_json(
        &lake,
        "SELECT COUNT(*) AS n FROM deliveries WHERE total_s IS NOT NULL",
    );
    assert_eq!(deliveries[0]["n"].as_i64().unwrap(), delivered);
}

/// `demo --services`: the whole loop from one command, the lake agreeing with the
/// services and the second wave quoted from the first one's delivery times.
#[test]
fn demo_with_services_closes_the_loop() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let args = [
        "demo",
        "--services",
        "--dir",
        demo.to_str().unwrap(),
        "--orders",
        "150",
    ];
    let o = ok(&args);
    let out = stdout(&o);
    let summary: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(summary["lake_matches_services"], true, "{summary}");
    assert_eq!(summary["first_wave"]["eta_from_lake"], 0, "{summary}");
    let second = &summary["second_wave"];
    assert!(second["accepted"].as_u64().unwrap() > 0, "{summary}");
    assert!(second["eta_from_lake"].as_u64().unwrap() > 0, "{summary}");
    assert!(out.contains("the lake agrees"), "{out}");
    // Run again in the same directory: it replaces what it made.
    let o = ok(&args);
    assert!(stdout(&o).contains("the lake agrees"));
}
