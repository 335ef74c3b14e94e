//! Delivery-time quotes for accepted orders: the seam where the pipeline's own output
//! comes back to the services.
//!
//! An [`EtaSource`] answers with how long from now an order should arrive and where
//! that figure came from (the `source` shown to customers and kept with the order).
//!
//! [`LakeEta`] quotes deliveries from the pipeline's own `store_delivery_5m`: the
//! store's newest window with a known average delivery time (rows in the lake are
//! final, so the newest row is the newest *closed* window), else the city's — the
//! deliveries-weighted mean over the stores in the newest window of all. It re-reads
//! the lake in the background (`rushhour query`'s engine, DataFusion) every refresh
//! interval, so a quote never waits on the lake; until the first read, and for pickup
//! orders (the table measures deliveries), it falls back to [`FixedEta`].

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rushhour_query::OutputFormat;
use rushhour_schemas::DeliveryType;
use rushhour_schemas::time::format_millis;
use serde_json::Value;

/// A quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eta {
    /// Milliseconds from placement to arrival (to ready for pickup orders).
    pub after_ms: i64,
    /// Where the figure came from, e.g. `default`.
    pub source: String,
}

/// Quotes delivery times.
pub trait EtaSource: Send + Sync {
    /// The quote for a new order at `store`.
    fn quote(&self, store: &str, delivery_type: DeliveryType) -> Eta;
}

/// The same quote for every store: `delivery_ms` for deliveries, `pickup_ms` for
/// pickups; source `default`.
#[derive(Debug, Clone, Copy)]
pub struct FixedEta {
    /// Quote of a delivery.
    pub delivery_ms: i64,
    /// Quote of a pickup order (food ready).
    pub pickup_ms: i64,
}

impl Default for FixedEta {
    fn default() -> Self {
        FixedEta {
            delivery_ms: 35 * 60_000,
            pickup_ms: 15 * 60_000,
        }
    }
}

impl EtaSource for FixedEta {
    fn quote(&self, _store: &str, delivery_type: DeliveryType) -> Eta {
        Eta {
            after_ms: match delivery_type {
                DeliveryType::Delivery => self.delivery_ms,
                DeliveryType::Pickup => self.pickup_ms,
            },
            source: "default".into(),
        }
    }
}

/// What the lake said at the last read.
#[derive(Debug, Clone, Default, PartialEq)]
struct LakeFigures {
    /// Per store: average delivery seconds of its newest window, and that window's end
    /// (epoch ms).
    stores: HashMap<String, (f64, i64)>,
    /// The city's: deliveries-weighted average over the newest window of all, its end.
    city: Option<(f64, i64)>,
}

/// The newest `store_delivery_5m` row with an average, per store.
const NEWEST_PER_STORE: &str = "WITH newest AS (\
     SELECT store_id, MAX(window_end) AS window_end FROM store_delivery_5m \
     WHERE avg_total_s IS NOT NULL GROUP BY store_id) \
     SELECT s.store_id, CAST(to_unixtime(s.window_end) AS BIGINT) AS end_s, \
     s.avg_total_s, s.deliveries \
     FROM store_delivery_5m s JOIN newest n \
     ON s.store_id = n.store_id AND s.window_end = n.window_end";

impl LakeFigures {
    fn from_rows(rows: &[Value]) -> LakeFigures {
        let mut figures = LakeFigures::default();
        let mut newest = i64::MIN;
        let mut parsed = Vec::with_capacity(rows.len());
        for r in rows {
            let (Some(store), Some(end_s), Some(avg), Some(n)) = (
                r["store_id"].as_str(),
                r["end_s"].as_i64(),
                r["avg_total_s"].as_f64(),
                r["deliveries"].as_i64(),
            ) else {
                continue;
            };
            let end_ms = end_s.saturating_mul(1000);
            newest = newest.max(end_ms);
            figures.stores.insert(store.to_owned(), (avg, end_ms));
            parsed.push((end_ms, avg, n));
        }
        let (sum, count) = parsed
            .iter()
            .filter(|(end, _, _)| *end == newest)
            .fold((0.0, 0i64), |(s, c), (_, avg, n)| {
                (s + avg * *n as f64, c + n)
            });
        if count > 0 {
            figures.city = Some((sum / count as f64, newest));
        }
        figures
    }
}

/// Quotes from the lake's `store_delivery_5m`; see the module docs.
pub struct LakeEta {
    lake: String,
    figures: Arc<RwLock<LakeFigures>>,
    fallback: FixedEta,
}

impl LakeEta {
    /// Quotes from `lake` (a directory or `s3://…`), re-read every `refresh` by a task
    /// on the current tokio runtime, which stops when the returned value is dropped.
    pub fn start(lake: &str, refresh: Duration, fallback: FixedEta) -> Arc<LakeEta> {
        let eta = Arc::new(LakeEta {
            lake: lake.to_owned(),
            figures: Arc::default(),
            fallback,
        });
        let weak = Arc::downgrade(&eta);
        tokio::spawn(async move {
            loop {
                let Some(eta) = weak.upgrade() else { return };
                eta.refresh().await;
                drop(eta);
                tokio::time::sleep(refresh).await;
            }
        });
        eta
    }

    /// Reads the lake once now. (The query engine's writer is not `Send`, so the read
    /// runs on a blocking thread, and this future is.)
    pub async fn refresh(self: &Arc<Self>) {
        let me = self.clone();
        let io = tokio::runtime::Handle::current();
        if let Err(e) = tokio::task::spawn_blocking(move || io.block_on(me.read_lake())).await {
            tracing::warn!("ETA: reading the lake failed: {e}");
        }
    }

    async fn read_lake(&self) {
        let mut out = Vec::new();
        match rushhour_query::run_query(&self.lake, NEWEST_PER_STORE, OutputFormat::Json, &mut out)
            .await
        {
            Ok(_) => {
                let rows: Vec<Value> = serde_json::from_slice(&out).unwrap_or_default();
                let figures = LakeFigures::from_rows(&rows);
                if let Ok(mut f) = self.figures.write() {
                    *f = figures;
                }
            }
            Err(e) => tracing::warn!("ETA: cannot read {}: {e}; quoting as before", self.lake),
        }
    }
}

impl EtaSource for LakeEta {
    fn quote(&self, store: &str, delivery_type: DeliveryType) -> Eta {
        if delivery_type == DeliveryType::Delivery
            && let Ok(f) = self.figures.read()
        {
            let (figure, whose) = match f.stores.get(store) {
                Some(x) => (Some(*x), store),
                None => (f.city, "city"),
            };
            if let Some((avg_s, end_ms)) = figure {
                return Eta {
                    after_ms: (avg_s * 1000.0).round() as i64,
                    source: format!(
                        "store_delivery_5m: {whose}, window ending {}",
                        format_millis(end_ms)
                    ),
                };
            }
        }
        self.fallback.quote(store, delivery_type)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_store_gets_its_newest_window_and_others_the_city_weighted_by_deliveries() {
        let rows = vec![
            json!({"store_id": "a", "end_s": 600, "avg_total_s": 1200.0, "deliveries": 1}),
            json!({"store_id": "b", "end_s": 600, "avg_total_s": 1800.0, "deliveries": 3}),
            json!({"store_id": "c", "end_s": 300, "avg_total_s": 900.0, "deliveries": 5}),
        ];
        let figures = LakeFigures::from_rows(&rows);
        assert_eq!(figures.stores["c"], (900.0, 300_000));
        // (1200·1 + 1800·3) / 4; store c's older window is not the city's newest.
        assert_eq!(figures.city, Some((1650.0, 600_000)));
        let eta = LakeEta {
            lake: String::new(),
            figures: Arc::new(RwLock::new(figures)),
            fallback: FixedEta::default(),
        };
        let q = eta.quote("c", DeliveryType::Delivery);
        assert_eq!(q.after_ms, 900_000);
        assert_eq!(
            q.source,
            "store_delivery_5m: c, window ending 1970-01-01T00:05:00.000Z"
        );
        assert_eq!(eta.quote("zz", DeliveryType::Delivery).after_ms, 1_650_000);
        assert_eq!(eta.quote("c", DeliveryType::Pickup).source, "default");
    }
}
