//! The outbox relay: events committed with their changes, sent to the stream after.
//!
//! The service never writes to a stream inside a request: it adds the event to the
//! `outbox` table in the same transaction as the change ([`crate::service`]). This
//! relay, on a thread of its own (the sinks are blocking, as the generator's are), reads
//! the outbox in sequence order, sends each event to the sink of its topic, flushes,
//! and only then deletes what it sent. A crash between sending and deleting sends those
//! events again on the next start — at least once, with the same `event_id`, which the
//! processor de-duplicates — and nothing committed is ever lost. Rows are deleted by
//! their own sequence numbers, not by range, because a transaction that took a lower
//! number may commit after a higher one was sent.
//!
//! One relay per database, however many service processes share it: on PostgreSQL
//! the relay that sends holds a session advisory lock on a connection of its own and
//! reads, sends and deletes through that connection; the relays of other processes
//! wait, trying the lock every second, and the first of them takes over when the
//! holder stops or its connection dies (the server ends the session and frees the
//! lock). So each topic has one writer at a time, sending in sequence order. A takeover
//! while the old holder is between sending and deleting sends that batch again, as a
//! crash would: at least once, never lost, and a copy may arrive after newer events
//! (the processor drops it by `event_id`). A relay stopping while another holds the
//! lock tries to take it for a few seconds, so that its own events go out with it; if
//! the holder keeps it, they are the holder's to send. SQLite is meant for one process
//! per database file (not enforced: two would both send), so its relay takes no lock.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rushhour_producer::{EventSink, SinkOptions, open_sink};
use rushhour_schemas::Endpoint;
use sqlx::{AnyConnection, AnyPool, Connection, Row};
use tokio::runtime::Handle;
use tokio::sync::Notify;

use crate::db::Backend;
use crate::service::{ORDERS_TOPIC, PURCHASE_ORDERS_TOPIC};

/// Rows read from the outbox per round.
const BATCH: i64 = 512;
/// How often an idle relay looks at the outbox without being woken.
const POLL: Duration = Duration::from_millis(250);
/// Pause after a failure before the relay tries again.
const RETRY: Duration = Duration::from_secs(1);
/// How long the relay lets events gather before a round that is not catching up on a
/// full batch: under load, tens of events per round instead of one or two, for a few
/// milliseconds more on the way to the stream (the producers' `linger`).
const LINGER: Duration = Duration::from_millis(5);
/// How often a relay on standby tries to take the lock.
const STANDBY: Duration = Duration::from_secs(1);
/// How long a relay stopping on standby keeps trying the lock before it leaves what
/// is in the outbox to the holder.
const STANDBY_AT_STOP: Duration = Duration::from_secs(5);
/// The PostgreSQL advisory lock the sending relay holds (any constant; the bytes of
/// `rushrela`).
const RELAY_LOCK: i64 = 0x7275_7368_7265_6c61;

/// Where each topic's events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routes {
    /// Order events (`--to`).
    pub orders: Endpoint,
    /// Purchase-order events (`--purchase-orders-to`; by default [`companion`] of
    /// `orders`).
    pub purchase_orders: Endpoint,
}

impl Routes {
    /// Order events to `orders`, purchase orders to its companion.
    pub fn new(orders: Endpoint) -> Routes {
        Routes {
            purchase_orders: companion(&orders, "purchase-orders"),
            orders,
        }
    }
}

fn with_suffix(path: &std::path::Path, suffix: &str) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}-{suffix}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{suffix}"),
    };
    path.with_file_name(name)
}

/// The stream beside `ep` for another kind of event: the topic, stream, log directory
/// or file name with `-SUFFIX` added (`kafka://b:9092/orders` →
/// `kafka://b:9092/orders-purchase-orders`). Standard output stays standard output.
pub fn companion(ep: &Endpoint, suffix: &str) -> Endpoint {
    match ep {
        Endpoint::File(p) => Endpoint::File(with_suffix(p, suffix)),
        Endpoint::Stdio => Endpoint::Stdio,
        Endpoint::Log(d) => Endpoint::Log(with_suffix(d, suffix)),
        Endpoint::Kafka { brokers, topic } => Endpoint::Kafka {
            brokers: brokers.clone(),
            topic: format!("{topic}-{suffix}"),
        },
        Endpoint::Kinesis { stream } => Endpoint::Kinesis {
            stream: format!("{stream}-{suffix}"),
        },
    }
}

/// Errors of the relay.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// A sink could not be opened.
    #[error("cannot open {sink}: {source}")]
    Open {
        /// The endpoint.
        sink: String,
        /// Why.
        source: rushhour_producer::ProducerError,
    },
    /// The relay thread is gone.
    #[error("the outbox relay stopped: {0}")]
    Stopped(String),
    /// Finishing a sink at shutdown failed (its events stay in the outbox).
    #[error("finishing {sink}: {source}")]
    Finish {
        /// The endpoint.
        sink: String,
        /// Why.
        source: rushhour_producer::ProducerError,
    },
}

/// A running relay. [`Relay::stop`] drains the outbox (when this relay holds the lock)
/// and finishes the sinks.
pub struct Relay {
    stop: Arc<AtomicBool>,
    wake: Arc<Notify>,
    sent: Arc<AtomicU64>,
    thread: Option<JoinHandle<Result<(), RelayError>>>,
}

struct Sinks {
    names: Vec<String>,
    sinks: Vec<Box<dyn EventSink>>,
    /// Sink index of the orders topic and of the purchase-orders topic.
    orders: usize,
    purchase_orders: usize,
}

impl Sinks {
    fn open(routes: &Routes, opts: &SinkOptions) -> Result<Sinks, RelayError> {
        let open = |ep: &Endpoint| {
            open_sink(ep, opts).map_err(|source| RelayError::Open {
                sink: ep.to_string(),
                source,
            })
        };
        let mut sinks = vec![open(&routes.orders)?];
        let mut names = vec![routes.orders.to_string()];
        // One sink when both name the same place (standard output), so that lines from
        // the two never interleave inside a buffer.
        let purchase_orders = if routes.purchase_orders == routes.orders {
            0
        } else {
            sinks.push(open(&routes.purchase_orders)?);
            names.push(routes.purchase_orders.to_string());
            1
        };
        Ok(Sinks {
            names,
            sinks,
            orders: 0,
            purchase_orders,
        })
    }

    fn route(&self, topic: &str) -> usize {
        if topic == PURCHASE_ORDERS_TOPIC {
            self.purchase_orders
        } else {
            debug_assert_eq!(topic, ORDERS_TOPIC);
            self.orders
        }
    }
}

impl Relay {
    /// Opens the sinks of `routes` and starts relaying from `pool`'s outbox (a
    /// database of kind `backend`: on PostgreSQL only the relay holding the lock
    /// sends). `wake` is notified by the service after each commit; `io` is the runtime
    /// the pool lives on (its queries run there).
    pub fn start(
        pool: AnyPool,
        backend: Backend,
        routes: Routes,
        opts: SinkOptions,
        wake: Arc<Notify>,
        io: Handle,
    ) -> Result<Relay, RelayError> {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (opened_tx, opened_rx) = std::sync::mpsc::channel();
        let thread = {
            let (stop, wake, sent) = (stop.clone(), wake.clone(), sent.clone());
            std::thread::Builder::new()
                .name("outbox-relay".into())
                .spawn(move || {
                    let sinks = match Sinks::open(&routes, &opts) {
                        Ok(s) => {
                            let _ = opened_tx.send(Ok(()));
                            s
                        }
                        Err(e) => {
                            let _ = opened_tx.send(Err(e));
                            return Ok(());
                        }
                    };
                    let outbox = Outbox {
                        pool,
                        locking: backend == Backend::Postgres,
                        lock: None,
                        trying: None,
                    };
                    relay(outbox, sinks, &stop, &wake, &sent, &io)
                })
                .map_err(|e| RelayError::Stopped(format!("cannot start its thread: {e}")))?
        };
        match opened_rx.recv() {
            Ok(Ok(())) => Ok(Relay {
                stop,
                wake,
                sent,
                thread: Some(thread),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(RelayError::Stopped(
                "it ended while opening its sinks".into(),
            )),
        }
    }

    /// Events sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Sends what is left in the outbox (on PostgreSQL once it holds the lock, tried for
    /// a few seconds), finishes the sinks and returns the number of events it sent.
    pub async fn stop(mut self) -> Result<u64, RelayError> {
        self.stop.store(true, Ordering::SeqCst);
        self.wake.notify_one();
        let Some(thread) = self.thread.take() else {
            return Ok(self.sent());
        };
        match tokio::task::spawn_blocking(move || thread.join()).await {
            Ok(Ok(result)) => result.map(|()| self.sent()),
            Ok(Err(_)) => Err(RelayError::Stopped("its thread panicked".into())),
            Err(e) => Err(RelayError::Stopped(e.to_string())),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }
}

/// The outbox as this relay reaches it.
struct Outbox {
    pool: AnyPool,
    /// Whether only the holder of [`RELAY_LOCK`] may send (PostgreSQL).
    locking: bool,
    /// The connection holding the lock, when this relay holds it; the relay's
    /// queries go through it.
    lock: Option<AnyConnection>,
    /// On standby: the connection that tries the lock, kept between tries.
    trying: Option<AnyConnection>,
}

impl Outbox {
    /// Whether this relay may send now: always without locking; with locking, once it
    /// holds the lock (taken here if free).
    async fn may_send(&mut self) -> Result<bool, String> {
        if !self.locking || self.lock.is_some() {
            return Ok(true);
        }
        // A connection of its own, out of the pool: the lock lives as long as it.
        let mut conn = match self.trying.take() {
            Some(c) => c,
            None => self
                .pool
                .acquire()
                .await
                .map_err(|e| format!("connecting for the relay lock: {e}"))?
                .detach(),
        };
        // On an error the connection is dropped: the next try starts afresh.
        let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(RELAY_LOCK)
            .fetch_one(&mut conn)
            .await
            .map_err(|e| format!("taking the relay lock: {e}"))?;
        if held {
            tracing::info!("outbox relay: this process sends the outbox");
            self.lock = Some(conn);
        } else {
            self.trying = Some(conn);
        }
        Ok(held)
    }

    /// After a failure: keeps the lock's connection only if it still answers, so that a
    /// lost session lets another relay (or this one, later) take over.
    async fn check_lock(&mut self) {
        if let Some(conn) = self.lock.as_mut()
            && conn.ping().await.is_err()
        {
            tracing::warn!("outbox relay: lost the connection holding the relay lock");
            self.lock = None;
        }
    }

    /// Frees the lock (closing its connection) so that a waiting relay takes over now.
    async fn release(&mut self) {
        for conn in [self.lock.take(), self.trying.take()].into_iter().flatten() {
            let _ = conn.close().await;
        }
    }
}

fn relay(
    mut outbox: Outbox,
    mut sinks: Sinks,
    stop: &AtomicBool,
    wake: &Notify,
    sent: &AtomicU64,
    io: &Handle,
) -> Result<(), RelayError> {
    let idle = |pause: Duration| {
        io.block_on(async {
            let _ = tokio::time::timeout(pause, wake.notified()).await;
        });
    };
    let mut stop_seen: Option<std::time::Instant> = None;
    loop {
        // Read the flag before the outbox, so that a stop finds everything committed
        // before it drained.
        let stopping = stop.load(Ordering::SeqCst);
        if stopping && stop_seen.is_none() {
            stop_seen = Some(std::time::Instant::now());
        }
        let step = io.block_on(async {
            if outbox.may_send().await? {
                round(&mut outbox, &mut sinks).await.map(Some)
            } else {
                Ok(None)
            }
        });
        match step {
            // Another process's relay sends this database's outbox, ours included.
            Ok(None) if stop_seen.is_some_and(|t| t.elapsed() >= STANDBY_AT_STOP) => {
                tracing::info!(
                    "outbox relay: another process holds the relay lock; what is left in \
                     the outbox is its to send"
                );
                break;
            }
            Ok(None) => std::thread::sleep(STANDBY),
            Ok(Some(0)) if stopping => break,
            Ok(Some(0)) => {
                idle(POLL);
                std::thread::sleep(LINGER);
            }
            Ok(Some(n)) => {
                sent.fetch_add(n, Ordering::Relaxed);
                if !stopping && n < BATCH.unsigned_abs() {
                    std::thread::sleep(LINGER);
                }
            }
            Err(e) if stopping => {
                tracing::error!(
                    "outbox relay: {e}; unsent events stay in the outbox for the next start"
                );
                break;
            }
            Err(e) => {
                tracing::warn!("outbox relay: {e}; retrying in {RETRY:?}");
                io.block_on(outbox.check_lock());
                std::thread::sleep(RETRY);
            }
        }
    }
    io.block_on(outbox.release());
    for (sink, name) in sinks.sinks.iter_mut().zip(&sinks.names) {
        sink.finish().map_err(|source| RelayError::Finish {
            sink: name.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Sends one batch from the outbox and deletes it; returns how many were sent.
async fn round(outbox: &mut Outbox, sinks: &mut Sinks) -> Result<u64, String> {
    let select = sqlx::query("SELECT seq, topic, key, payload FROM outbox ORDER BY seq LIMIT $1")
        .bind(BATCH);
    let rows = match outbox.lock.as_mut() {
        Some(conn) => select.fetch_all(conn).await,
        None => select.fetch_all(&outbox.pool).await,
    }
    .map_err(|e| format!("reading the outbox: {e}"))?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut seqs = Vec::with_capacity(rows.len());
    let mut used = vec![false; sinks.sinks.len()];
    for row in &rows {
        let read = |e: sqlx::Error| format!("reading the outbox: {e}");
        let seq: i64 = row.try_get("seq").map_err(read)?;
        let topic: String = row.try_get("topic").map_err(read)?;
        let key: String = row.try_get("key").map_err(read)?;
        let payload: String = row.try_get("payload").map_err(read)?;
        let i = sinks.route(&topic);
        sinks.sinks[i]
            .send(&key, payload.as_bytes())
            .map_err(|e| format!("sending to {}: {e}", sinks.names[i]))?;
        used[i] = true;
        seqs.push(seq);
    }
    for (i, sink) in sinks.sinks.iter_mut().enumerate() {
        if used[i] {
            sink.flush()
                .map_err(|e| format!("flushing {}: {e}", sinks.names[i]))?;
        }
    }
    let placeholders: Vec<String> = (1..=seqs.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "DELETE FROM outbox WHERE seq IN ({})",
        placeholders.join(", ")
    );
    let mut delete = sqlx::query(&sql);
    for seq in &seqs {
        delete = delete.bind(*seq);
    }
    match outbox.lock.as_mut() {
        Some(conn) => delete.execute(conn).await,
        None => delete.execute(&outbox.pool).await,
    }
    .map_err(|e| format!("deleting sent events from the outbox: {e}"))?;
    Ok(seqs.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purchase_orders_go_beside_the_order_stream() {
        let cases = [
            ("log:/data/orders", "log:/data/orders-purchase-orders"),
            ("file:/tmp/ev.jsonl", "file:/tmp/ev-purchase-orders.jsonl"),
            (
                "kafka://127.0.0.1:9092/orders",
                "kafka://127.0.0.1:9092/orders-purchase-orders",
            ),
            ("kinesis://orders", "kinesis://orders-purchase-orders"),
            ("file:-", "file:-"),
        ];
        for (orders, expected) in cases {
            let ep: Endpoint = orders.parse().expect("endpoint");
            let want: Endpoint = expected.parse().expect("endpoint");
            assert_eq!(Routes::new(ep).purchase_orders, want, "{orders}");
        }
    }
}
