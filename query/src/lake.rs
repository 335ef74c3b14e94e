//! Where the lake is, and how its tables become DataFusion tables.
//!
//! Every table of [`Table::ALL`] is registered under its SQL name as a [`ListingTable`]
//! over its own directory (`<lake>/<dir>/`), never over the lake root: the pipeline's
//! `_staging/` and `_checkpoints/` live beside the tables and so can never be read as
//! table data. The schema is the one the writers use ([`Table::schema`]), not one
//! inferred from whatever files happen to be there, so a query means the same thing on
//! every lake, young or old.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::common::config::TableParquetOptions;
use datafusion::datasource::empty::EmptyTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use object_store::ObjectStore;
use rushhour_cloud::LakeUrl;
use rushhour_schemas::Table;

use crate::error::QueryError;

/// Where a lake lives, as parsed from the `--lake` argument: the one lake-URL parser
/// of rushhour ([`rushhour_cloud::LakeUrl`]).
pub type LakeLocation = LakeUrl;

/// Parses a `--lake` argument.
pub fn parse_lake(lake: &str) -> Result<LakeLocation, QueryError> {
    LakeUrl::parse(lake).map_err(|e| QueryError::BadLake {
        lake: e.url,
        reason: e.reason,
    })
}

/// Builds the session's tables for the lake at `lake` (the argument as given, for
/// messages) and registers them on `ctx`.
pub(crate) async fn register_tables(
    ctx: &SessionContext,
    lake: &str,
    location: &LakeLocation,
) -> Result<(), QueryError> {
    let parquet = ctx.state().table_options().parquet.clone();
    match location {
        LakeUrl::Local(path) => {
            let root = local_root(lake, path)?;
            for table in Table::ALL {
                let provider = local_table(&root, table, &parquet)?;
                ctx.register_table(table.name(), provider)
                    .map_err(QueryError::from_datafusion)?;
            }
        }
        LakeUrl::S3 { bucket, prefix } => {
            let store: Arc<dyn ObjectStore> =
                Arc::new(rushhour_cloud::s3_settings(bucket).build().map_err(|e| {
                    QueryError::BadLake {
                        lake: lake.to_owned(),
                        reason: e.to_string(),
                    }
                })?);
            // A lake with nothing under it is no lake (a typo in the prefix, say).
            let root = object_store::path::Path::from(prefix.as_str());
            match store.list(Some(&root)).next().await {
                Some(Ok(_)) => {}
                None => {
                    return Err(QueryError::NoLake {
                        path: lake.to_owned(),
                        reason: "nothing is stored under it".to_owned(),
                    });
                }
                Some(Err(e)) => {
                    return Err(QueryError::Unsupported(format!("cannot list {lake}: {e}")));
                }
            }
            let base = ListingTableUrl::parse(format!("s3://{bucket}/"))
                .map_err(QueryError::from_datafusion)?;
            ctx.register_object_store(base.as_ref(), store);
            let root = match prefix.as_str() {
                "" => format!("s3://{bucket}"),
                p => format!("s3://{bucket}/{p}"),
            };
            for table in Table::ALL {
                let url = ListingTableUrl::parse(format!("{root}/{}/", table.dir()))
                    .map_err(QueryError::from_datafusion)?;
                ctx.register_table(table.name(), listing(url, table, &parquet)?)
                    .map_err(QueryError::from_datafusion)?;
            }
        }
    }
    Ok(())
}

/// Checks that the local lake is a directory and returns its absolute path.
fn local_root(lake: &str, path: &Path) -> Result<PathBuf, QueryError> {
    let no_lake = |reason: &str| QueryError::NoLake {
        path: path.display().to_string(),
        reason: reason.to_owned(),
    };
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(no_lake("not a directory")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(no_lake("no such directory"));
        }
        Err(error) => {
            return Err(QueryError::LakeIo {
                path: path.to_owned(),
                error,
            });
        }
    }
    let root = std::fs::canonicalize(path).map_err(|error| QueryError::LakeIo {
        path: path.to_owned(),
        error,
    })?;
    let Some(text) = root.to_str() else {
        return Err(QueryError::BadLake {
            lake: lake.to_owned(),
            reason: "the path is not valid UTF-8".to_owned(),
        });
    };
    // DataFusion reads these characters in a local path as a glob pattern.
    if text.contains(['*', '?', '[']) {
        return Err(QueryError::Unsupported(format!(
            "lake paths containing `*`, `?` or `[` are not supported ({})",
            root.display()
        )));
    }
    Ok(root)
}

/// The table over `<root>/<dir>/`, or an empty table with the same columns if the
/// directory does not exist yet.
fn local_table(
    root: &Path,
    table: Table,
    parquet: &TableParquetOptions,
) -> Result<Arc<dyn TableProvider>, QueryError> {
    let dir = root.join(table.dir());
    match std::fs::metadata(&dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(QueryError::LakeIo {
                path: dir,
                error: io::Error::new(
                    io::ErrorKind::NotADirectory,
                    "a table's path must be a directory",
                ),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Arc::new(EmptyTable::new(table_schema(table))));
        }
        Err(error) => return Err(QueryError::LakeIo { path: dir, error }),
    }
    // `root` is UTF-8 (checked in `local_root`) and the table dirs are ASCII.
    let url = ListingTableUrl::parse(format!("{}/", dir.display()))
        .map_err(QueryError::from_datafusion)?;
    listing(url, table, parquet)
}

/// The listing table of `table` over the files under `url`, with the table's schema.
fn listing(
    url: ListingTableUrl,
    table: Table,
    parquet: &TableParquetOptions,
) -> Result<Arc<dyn TableProvider>, QueryError> {
    let format = ParquetFormat::default().with_options(parquet.clone());
    let options = ListingOptions::new(Arc::new(format))
        .with_file_extension(".parquet")
        .with_table_partition_cols(partition_columns(table));
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(table.schema());
    let listing = ListingTable::try_new(config).map_err(QueryError::from_datafusion)?;
    Ok(Arc::new(listing))
}

/// The hive partition columns of a table, all strings: `event_hour` is `'07'`, not `7`,
/// exactly as in the directory names, so that a filter on them prunes directories.
fn partition_columns(table: Table) -> Vec<(String, DataType)> {
    table
        .partition_columns()
        .iter()
        .map(|name| ((*name).to_owned(), DataType::Utf8))
        .collect()
}

/// The columns a query sees: the files' columns, then the partition columns (non-null,
/// as `ListingTable` declares them).
pub(crate) fn table_schema(table: Table) -> SchemaRef {
    let files = table.schema();
    if table.partition_columns().is_empty() {
        return files;
    }
    let mut fields: Vec<Field> = files.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.extend(
        partition_columns(table)
            .into_iter()
            .map(|(name, data_type)| Field::new(name, data_type, false)),
    );
    Arc::new(Schema::new_with_metadata(fields, files.metadata().clone()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn lake_urls_are_parsed_by_the_shared_parser() {
        assert_eq!(
            parse_lake("file:///tmp/lake").unwrap(),
            LakeUrl::Local(PathBuf::from("/tmp/lake"))
        );
        for lake in ["", "s3://", "file://host/x", "gs://b/p"] {
            let err = parse_lake(lake).unwrap_err();
            assert!(matches!(err, QueryError::BadLake { .. }), "{lake}: {err}");
            assert!(err.is_user_error());
        }
    }

    #[test]
    fn raw_events_gets_its_partition_columns() {
        let schema = table_schema(Table::RawEvents);
        let n = schema.fields().len();
        assert_eq!(schema.field(n - 2).name(), "event_date");
        assert_eq!(schema.field(n - 1).name(), "event_hour");
        assert_eq!(schema.field(n - 1).data_type(), &DataType::Utf8);
        assert_eq!(
            table_schema(Table::StoreMinute),
            Table::StoreMinute.schema()
        );
    }
}
