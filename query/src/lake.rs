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
use rushhour_schemas::Table;

use crate::error::QueryError;

/// Where a lake lives, as parsed from the `--lake` argument.
///
/// Parsing does not touch the lake; [`lake_context`](crate::lake_context) checks that it
/// is there.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LakeLocation {
    /// A directory on the local file system: a plain path (relative or absolute),
    /// `file:PATH`, `file:///ABSOLUTE/PATH` or `file://localhost/ABSOLUTE/PATH`. As with
    /// the CLI's `file:` endpoints, the path after the scheme is taken verbatim (no
    /// percent-decoding).
    Local(PathBuf),
    /// A prefix in an S3 bucket, `s3://BUCKET/PREFIX` (the prefix may be empty).
    S3 {
        /// The bucket.
        bucket: String,
        /// The key prefix of the lake root, without leading or trailing `/`.
        prefix: String,
    },
}

impl LakeLocation {
    /// Parses a `--lake` argument.
    pub fn parse(lake: &str) -> Result<LakeLocation, QueryError> {
        let bad = |reason: &str| QueryError::BadLake {
            lake: lake.to_owned(),
            reason: reason.to_owned(),
        };
        if lake.is_empty() {
            return Err(bad("the lake is empty"));
        }
        if let Some(rest) = lake.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("missing bucket"));
            }
            return Ok(LakeLocation::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.trim_matches('/').to_owned(),
            });
        }
        if let Some(rest) = lake.strip_prefix("file:") {
            let path = match rest.strip_prefix("//") {
                // `file:///abs` and `file://localhost/abs`; any other host is remote.
                Some(rest) if rest.starts_with('/') => rest,
                Some(rest) => match rest.strip_prefix("localhost") {
                    Some(path) if path.starts_with('/') => path,
                    _ => return Err(bad("a file:// URL must name an absolute local path")),
                },
                None => rest,
            };
            if path.is_empty() {
                return Err(bad("missing path"));
            }
            return Ok(LakeLocation::Local(PathBuf::from(path)));
        }
        if let Some((scheme, _)) = lake.split_once("://") {
            return Err(bad(&format!("unknown scheme `{scheme}://`")));
        }
        Ok(LakeLocation::Local(PathBuf::from(lake)))
    }
}

/// Builds the session's tables for the lake at `lake` (the argument as given, for
/// messages) and registers them on `ctx`.
pub(crate) fn register_tables(
    ctx: &SessionContext,
    lake: &str,
    location: &LakeLocation,
) -> Result<(), QueryError> {
    let root = match location {
        LakeLocation::Local(path) => local_root(lake, path)?,
        // The design is ready for object stores: register an `object_store` client for
        // `s3://BUCKET` on the context (`SessionContext::register_object_store`) and point
        // the listing tables at `s3://BUCKET/PREFIX/<dir>/`; table presence is then a
        // listing of the prefix instead of a `stat`.
        LakeLocation::S3 { .. } => {
            return Err(QueryError::Unsupported(format!(
                "S3 lakes are not supported yet ({lake}); copy the lake to a local \
                 directory (e.g. `aws s3 sync`) and query that"
            )));
        }
    };
    let parquet = ctx.state().table_options().parquet.clone();
    for table in Table::ALL {
        let provider = local_table(&root, table, &parquet)?;
        ctx.register_table(table.name(), provider)
            .map_err(QueryError::from_datafusion)?;
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

    fn local(p: &str) -> LakeLocation {
        LakeLocation::Local(PathBuf::from(p))
    }

    #[test]
    fn parses_local_paths_and_urls() {
        assert_eq!(LakeLocation::parse("lake").unwrap(), local("lake"));
        assert_eq!(LakeLocation::parse("./a/b").unwrap(), local("./a/b"));
        assert_eq!(
            LakeLocation::parse("/tmp/lake").unwrap(),
            local("/tmp/lake")
        );
        assert_eq!(LakeLocation::parse("file:lake").unwrap(), local("lake"));
        assert_eq!(
            LakeLocation::parse("file:///tmp/lake").unwrap(),
            local("/tmp/lake")
        );
        assert_eq!(
            LakeLocation::parse("file://localhost/tmp/lake").unwrap(),
            local("/tmp/lake")
        );
    }

    #[test]
    fn parses_s3() {
        assert_eq!(
            LakeLocation::parse("s3://bucket/some/prefix/").unwrap(),
            LakeLocation::S3 {
                bucket: "bucket".into(),
                prefix: "some/prefix".into()
            }
        );
        assert_eq!(
            LakeLocation::parse("s3://bucket").unwrap(),
            LakeLocation::S3 {
                bucket: "bucket".into(),
                prefix: String::new()
            }
        );
    }

    #[test]
    fn refuses_nonsense() {
        for lake in [
            "",
            "s3://",
            "s3:///x",
            "file:",
            "file://",
            "file://host/x",
            "gs://b/p",
        ] {
            let err = LakeLocation::parse(lake).unwrap_err();
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
