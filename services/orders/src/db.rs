//! The database: PostgreSQL, or SQLite as the embedded default, through one code path.
//!
//! Queries go through sqlx's `Any` driver, so the service's SQL is written once: it
//! uses `$1`-style parameters (which SQLite accepts too), `BIGINT`, `TEXT` and
//! `DOUBLE PRECISION` columns only (what `Any` decodes on both), and no aggregates whose
//! type differs between the two (PostgreSQL's `SUM` of `BIGINT` is `NUMERIC`).
//! Migrations are embedded and run at start-up; only the outbox's sequence needs a
//! spelling per database, so each has its own migration files.
//!
//! SQLite runs with one connection: writers are serialised by the pool instead of by
//! `SQLITE_BUSY` retries, which is all an embedded single-process default needs.
//! PostgreSQL keeps a pool; concurrent orders are made safe by the queries themselves
//! (a conditional `UPDATE` per material, taken in a fixed order), see [`crate::service`].

use std::borrow::Cow;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::{AnyPool, Executor};

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `postgres://…` or `postgresql://…`
    Postgres,
    /// `sqlite:PATH` or `sqlite::memory:`
    Sqlite,
}

impl Backend {
    /// The backend of `url`, or why it is not one.
    pub fn of(url: &str) -> Result<Backend, DbError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else {
            Err(DbError::Url(format!(
                "{url:?} is not a database URL: use postgres://USER@HOST:PORT/DB or sqlite:PATH"
            )))
        }
    }
}

/// Errors of the database layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL names no supported database.
    #[error("{0}")]
    Url(String),
    /// Connecting or a query failed.
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    /// A migration failed.
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// The embedded database when `serve` is given none: a file in the working directory.
pub const DEFAULT_URL: &str = "sqlite:rushhour-services.db";

fn migrations(backend: Backend) -> Vec<Migration> {
    let files: &[(i64, &str, &'static str)] = match backend {
        Backend::Postgres => &[(
            1,
            "init",
            include_str!("../migrations/postgres/0001_init.sql"),
        )],
        Backend::Sqlite => &[(
            1,
            "init",
            include_str!("../migrations/sqlite/0001_init.sql"),
        )],
    };
    files
        .iter()
        .map(|&(version, name, sql)| {
            Migration::new(
                version,
                Cow::Borrowed(name),
                MigrationType::Simple,
                Cow::Borrowed(sql),
                false,
            )
        })
        .collect()
}

/// The migrations compiled into the binary, as a source for sqlx's migrator.
#[derive(Debug)]
struct Embedded(Backend);

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move { Ok(migrations(self.0)) })
    }
}

/// Opens the database at `url` (a SQLite file is created if missing) and brings its
/// schema up to date.
pub async fn open(url: &str, max_connections: u32) -> Result<(AnyPool, Backend), DbError> {
    sqlx::any::install_default_drivers();
    let backend = Backend::of(url)?;
    let url = match backend {
        // Create the file when it is missing (sqlx opens read-write only by default).
        Backend::Sqlite if !url.contains("mode=") && !url.contains(":memory:") => {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}mode=rwc")
        }
        _ => url.to_owned(),
    };
    let options: AnyConnectOptions = url.parse()?;
    let pool = match backend {
        Backend::Postgres => {
            AnyPoolOptions::new()
                .max_connections(max_connections.max(1))
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(options)
                .await?
        }
        Backend::Sqlite => {
            AnyPoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .acquire_timeout(Duration::from_secs(30))
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        conn.execute("PRAGMA busy_timeout = 5000").await?;
                        Ok(())
                    })
                })
                .connect_with(options)
                .await?
        }
    };
    Migrator::new(Embedded(backend)).await?.run(&pool).await?;
    Ok((pool, backend))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_backend_or_say_what_is_wrong() {
        assert_eq!(
            Backend::of("postgres://u@h/db").ok(),
            Some(Backend::Postgres)
        );
        assert_eq!(
            Backend::of("postgresql://u@h/db").ok(),
            Some(Backend::Postgres)
        );
        assert_eq!(Backend::of("sqlite::memory:").ok(), Some(Backend::Sqlite));
        let err = Backend::of("mysql://h/db").unwrap_err().to_string();
        assert!(err.contains("not a database URL"), "{err}");
    }

    #[test]
    fn both_backends_have_the_same_migrations() {
        let pg = migrations(Backend::Postgres);
        let lite = migrations(Backend::Sqlite);
        let versions = |m: &[Migration]| m.iter().map(|m| m.version).collect::<Vec<_>>();
        assert_eq!(versions(&pg), versions(&lite));
    }
}
