//! The order service: customers' orders against store inventory, over HTTP, feeding
//! the event stream the processor reads.
//!
//! The ordering side of the business, as the stream's producer: an order is accepted
//! only when the store can make it (every raw material of every item's recipe
//! reserved in one database transaction, never oversold under concurrency), stock
//! running low opens one supplier purchase order, idempotency keys make retries safe,
//! and every accepted change reaches the stream as the contract's events through a
//! transactional outbox. PostgreSQL in production, SQLite embedded by default, one
//! code path ([`db`]).
//!
//! - [`catalog`]: recipes and opening stock (stores and menus come from the producer's
//!   city, so `serve` and `generate` with one seed describe the same city);
//! - [`db`]: connecting and migrating;
//! - [`service`]: the rules, in transactions;
//! - [`outbox`]: events sent after commit;
//! - [`eta`]: delivery-time quotes (the seam where the pipeline's output comes back);
//! - [`http`]: the API.
//!
//! [`start`] runs it all; `rushhour serve` is its command line.

pub mod catalog;
pub mod db;
pub mod delivery;
pub mod drive;
pub mod eta;
pub mod http;
mod ids;
pub mod outbox;
pub mod service;

use std::net::SocketAddr;
use std::sync::Arc;

use rushhour_producer::SinkOptions;
use tokio::sync::{Notify, oneshot, watch};

pub use db::{Backend, DbError};
pub use outbox::{Relay, RelayError, Routes};
pub use service::{OrderRequest, OrderService, ServiceError};

/// What `rushhour serve` starts.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where to listen.
    pub addr: SocketAddr,
    /// `postgres://…` or `sqlite:PATH` ([`db::DEFAULT_URL`] when not given).
    pub db: String,
    /// Where events go.
    pub routes: Routes,
    /// How sinks are opened (partitions of a new stream, …).
    pub sink: SinkOptions,
    /// Seed and number of stores of the catalogue put into an empty database (the
    /// generator's defaults: seed 1, 40 stores).
    pub seed: u64,
    /// See `seed`.
    pub stores: u32,
    /// Connections to PostgreSQL (SQLite always uses one).
    pub max_connections: u32,
    /// A lake whose `store_delivery_5m` ETAs are quoted from ([`eta::LakeEta`]);
    /// fixed quotes ([`eta::FixedEta`]) without.
    pub eta_lake: Option<String>,
    /// How often the lake is re-read for ETAs.
    pub eta_refresh: std::time::Duration,
    /// Riders farther than this (metres) from the store are not offered its orders.
    pub max_rider_distance_m: f64,
    /// An offer not answered in this long goes to the next rider.
    pub offer_timeout: std::time::Duration,
}

/// Errors starting or stopping the services.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The database.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Seeding the catalogue.
    #[error("seeding the catalogue: {0}")]
    Seed(#[from] ServiceError),
    /// The relay.
    #[error(transparent)]
    Relay(#[from] RelayError),
    /// Listening.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Http(String),
}

/// The services, running.
pub struct Running {
    /// The address they listen on (the port chosen when `addr` asked for port 0).
    pub addr: SocketAddr,
    /// The database's kind.
    pub backend: Backend,
    /// Stores added to an empty database at start.
    pub seeded: usize,
    stop: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    sweeper: tokio::task::JoinHandle<()>,
    relay: Relay,
}

/// Opens (and migrates, and seeds) the database, starts the outbox relay and the HTTP
/// server. Must be called within a multi-threaded tokio runtime.
pub async fn start(cfg: ServeConfig) -> Result<Running, ServeError> {
    let (pool, backend) = db::open(&cfg.db, cfg.max_connections).await?;
    let wake = Arc::new(Notify::new());
    let quotes: Arc<dyn eta::EtaSource> = match &cfg.eta_lake {
        Some(lake) => {
            let lake_eta = eta::LakeEta::start(lake, cfg.eta_refresh, eta::FixedEta::default());
            // The first read before the first order, so that quotes start from the lake.
            lake_eta.refresh().await;
            lake_eta
        }
        None => Arc::new(eta::FixedEta::default()),
    };
    let service = OrderService::new(pool.clone(), quotes, wake.clone()).with_dispatch(
        cfg.max_rider_distance_m,
        i64::try_from(cfg.offer_timeout.as_millis()).unwrap_or(i64::MAX),
    );
    let seeded = service.seed_catalogue(cfg.seed, cfg.stores).await?;
    let relay = Relay::start(
        pool,
        backend,
        cfg.routes.clone(),
        cfg.sink.clone(),
        wake,
        tokio::runtime::Handle::current(),
    )?;
    let listener = tokio::net::TcpListener::bind(cfg.addr)
        .await
        .map_err(|source| ServeError::Listen {
            addr: cfg.addr,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Listen {
        addr: cfg.addr,
        source,
    })?;
    let (stop, stopped) = oneshot::channel::<()>();
    let (closing_tx, closing) = watch::channel(false);
    let app = http::router(service.clone(), closing);
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
                let _ = closing_tx.send(true);
            })
            .await
    });
    // Offers nobody answered go to the next rider.
    let sweeper = tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            if let Err(e) = service.expire_offers().await {
                tracing::warn!("passing on unanswered offers: {e}");
            }
        }
    });
    Ok(Running {
        addr,
        backend,
        seeded,
        stop,
        server,
        sweeper,
        relay,
    })
}

impl Running {
    /// Events sent to the stream so far.
    pub fn events_sent(&self) -> u64 {
        self.relay.sent()
    }

    /// Stops taking requests, lets those in flight finish, sends what is left in the
    /// outbox (unless another process holds the relay lock: then it is that one's to
    /// send) and finishes the sinks. Returns the number of events this process sent.
    pub async fn stop(self) -> Result<u64, ServeError> {
        let _ = self.stop.send(());
        self.sweeper.abort();
        match self.server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(ServeError::Http(e.to_string())),
            Err(e) => return Err(ServeError::Http(e.to_string())),
        }
        Ok(self.relay.stop().await?)
    }
}
