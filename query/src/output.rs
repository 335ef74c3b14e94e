//! Rendering a query's rows: an aligned table for people, CSV and JSON for programs.
//!
//! CSV, JSON and NDJSON are written batch by batch as the query produces them, so a big
//! answer never has to fit in memory; the table needs every row first to size its
//! columns. Timestamps are RFC 3339 in every format (`2026-11-21T12:00:01.250Z`, as
//! the session time zone is UTC).

use std::fmt;
use std::io::Write;
use std::str::FromStr;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::json::writer::{EncoderOptions, JsonArray, JsonFormat, LineDelimited, make_encoder};
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;

use crate::error::QueryError;

/// How `rushhour query` prints its answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum OutputFormat {
    /// An aligned text table with a header, for people; the header is printed even when
    /// there are no rows.
    #[default]
    Table,
    /// CSV with a header line (also when there are no rows). Nested values (the `items`
    /// of `raw_events`) are written as JSON text in their cell; binary values as hex.
    Csv,
    /// One JSON array of objects, one object per row, `[]` when there are no rows. Every
    /// object has every column: SQL nulls are JSON `null`. Binary values are hex strings.
    Json,
    /// Newline-delimited JSON: one object per row and line, nothing when there are no rows.
    Ndjson,
}

impl OutputFormat {
    /// Every format, in the order they are listed in help texts.
    pub const ALL: [OutputFormat; 4] = [
        OutputFormat::Table,
        OutputFormat::Csv,
        OutputFormat::Json,
        OutputFormat::Ndjson,
    ];

    /// The name of the format on the command line: `table`, `csv`, `json` or `ndjson`.
    pub fn name(self) -> &'static str {
        match self {
            OutputFormat::Table => "table",
            OutputFormat::Csv => "csv",
            OutputFormat::Json => "json",
            OutputFormat::Ndjson => "ndjson",
        }
    }
}

impl fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An output format name that is not one of `table`, `csv`, `json`, `ndjson`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown output format `{0}`: expected table, csv, json or ndjson")]
pub struct UnknownFormat(pub String);

impl FromStr for OutputFormat {
    type Err = UnknownFormat;

    /// Parses a format name, ignoring ASCII case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OutputFormat::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownFormat(s.to_owned()))
    }
}

/// Drains `stream` into `out` in `format`; returns the number of rows.
pub(crate) async fn write_stream(
    format: OutputFormat,
    mut stream: SendableRecordBatchStream,
    out: &mut dyn Write,
) -> Result<u64, QueryError> {
    let schema = stream.schema();
    let mut rows = 0u64;
    let fmt_err = |e| QueryError::from_writer(format, e);
    match format {
        OutputFormat::Table => {
            let mut batches = Vec::new();
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(QueryError::from_datafusion)?;
                rows += batch.num_rows() as u64;
                batches.push(batch);
            }
            let table = arrow::util::pretty::pretty_format_batches_with_schema(schema, &batches)
                .map_err(fmt_err)?;
            writeln!(out, "{table}").map_err(QueryError::output)?;
        }
        OutputFormat::Csv => {
            let csv_schema = csv_schema(&schema);
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut *out);
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(QueryError::from_datafusion)?;
                if batch.num_rows() == 0 {
                    continue;
                }
                rows += batch.num_rows() as u64;
                let batch = csv_batch(&batch, &csv_schema).map_err(fmt_err)?;
                writer.write(&batch).map_err(fmt_err)?;
            }
            if rows == 0 {
                // The header comes with the first batch written.
                writer
                    .write(&RecordBatch::new_empty(csv_schema))
                    .map_err(fmt_err)?;
            }
        }
        OutputFormat::Json => {
            rows = write_json::<JsonArray>(format, &mut stream, &mut *out).await?;
            // The array writer ends without a newline; a shell prompt should not.
            writeln!(out).map_err(QueryError::output)?;
        }
        OutputFormat::Ndjson => {
            rows = write_json::<LineDelimited>(format, &mut stream, &mut *out).await?;
        }
    }
    out.flush().map_err(QueryError::output)?;
    Ok(rows)
}

/// Writes the stream with arrow's JSON writer, nulls explicit.
async fn write_json<F: JsonFormat>(
    format: OutputFormat,
    stream: &mut SendableRecordBatchStream,
    out: &mut dyn Write,
) -> Result<u64, QueryError> {
    let fmt_err = |e| QueryError::from_writer(format, e);
    let mut writer = arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, F>(out);
    let mut rows = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(QueryError::from_datafusion)?;
        rows += batch.num_rows() as u64;
        writer.write(&batch).map_err(fmt_err)?;
    }
    writer.finish().map_err(fmt_err)?;
    Ok(rows)
}

/// The schema CSV is written with: nested columns become JSON text.
fn csv_schema(schema: &SchemaRef) -> SchemaRef {
    if !schema.fields().iter().any(|f| f.data_type().is_nested()) {
        return schema.clone();
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            if f.data_type().is_nested() {
                Field::new(f.name(), DataType::Utf8, f.is_nullable())
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `batch` with its nested columns as JSON text, under `csv_schema`.
fn csv_batch(batch: &RecordBatch, csv_schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    if Arc::ptr_eq(&batch.schema(), csv_schema) || batch.schema() == *csv_schema {
        return Ok(batch.clone());
    }
    let columns = batch
        .schema()
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(field, column)| {
            if column.data_type().is_nested() {
                json_text(field, column.as_ref())
            } else {
                Ok(column.clone())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(csv_schema.clone(), columns)
}

/// Each value of a nested array as its JSON text; nulls stay null.
fn json_text(field: &FieldRef, array: &dyn Array) -> Result<ArrayRef, ArrowError> {
    let options = EncoderOptions::default().with_explicit_nulls(true);
    let mut encoder = make_encoder(field, array, &options)?;
    let mut texts = StringBuilder::with_capacity(array.len(), array.len() * 32);
    let mut buf = Vec::with_capacity(128);
    for i in 0..array.len() {
        if encoder.is_null(i) {
            texts.append_null();
            continue;
        }
        buf.clear();
        encoder.encode(i, &mut buf);
        texts.append_value(String::from_utf8_lossy(&buf));
    }
    Ok(Arc::new(texts.finish()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn format_names_round_trip() {
        for f in OutputFormat::ALL {
            assert_eq!(f.name().parse::<OutputFormat>(), Ok(f));
            assert_eq!(f.to_string(), f.name());
        }
        assert_eq!("CSV".parse::<OutputFormat>(), Ok(OutputFormat::Csv));
        let err = "xml".parse::<OutputFormat>().unwrap_err();
        assert!(err.to_string().contains("`xml`"), "{err}");
    }
}
