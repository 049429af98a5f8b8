"""predictions.parquet: the month's CSV rows with typed columns, for Spark, Synapse or Databricks.

The same rows in the same order as predictions.csv; empty CSV cells are nulls
(an ``empty`` or ``error`` row has no class, box or confidence). Written in
row groups while the CSV streams through, so memory stays bounded.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from include.monthly.schema import PREDICTION_COLUMNS

PARQUET_SCHEMA = pa.schema([
    ("image", pa.string()),
    ("status", pa.string()),
    ("class_id", pa.int32()),
    ("class_name", pa.string()),
    ("confidence", pa.float64()),
    ("x1", pa.float64()),
    ("y1", pa.float64()),
    ("x2", pa.float64()),
    ("y2", pa.float64()),
    ("image_width", pa.int32()),
    ("image_height", pa.int32()),
    ("error", pa.string()),
])
assert tuple(PARQUET_SCHEMA.names) == PREDICTION_COLUMNS, "parquet columns follow the CSV schema"


def csv_to_parquet(csv_path: Path | str, parquet_path: Path | str) -> int:
    """Convert a predictions CSV to Parquet (zstd); returns the number of rows written."""
    reader = pacsv.open_csv(
        csv_path,
        read_options=pacsv.ReadOptions(block_size=8 << 20),
        convert_options=pacsv.ConvertOptions(
            column_types={f.name: f.type for f in PARQUET_SCHEMA}, null_values=[""],
            strings_can_be_null=True, include_columns=list(PARQUET_SCHEMA.names),
        ),
    )
    rows = 0
    with pq.ParquetWriter(parquet_path, PARQUET_SCHEMA, compression="zstd") as writer:
        for batch in reader:
            writer.write_table(pa.Table.from_batches([batch]).cast(PARQUET_SCHEMA))
            rows += batch.num_rows
    return rows
