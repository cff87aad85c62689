"""The processed zone's Parquet: dictionaries only where they pay."""

import io

import pyarrow as pa
import pyarrow.parquet as pq

from totes_cdc.lakefiles import parquet_bytes


def test_a_column_of_unique_values_stops_its_dictionary_at_16_kib():
    rows = 100_000
    table = pa.table({"few": pa.array([i % 3 for i in range(rows)], pa.int32()),
                      "unique": pa.array(range(rows), pa.int64())})
    ours = parquet_bytes(table)
    few, unique = (pq.ParquetFile(io.BytesIO(ours)).metadata.row_group(0).column(i) for i in range(2))
    assert few.has_dictionary_page and few.total_compressed_size < 4_000  # three values, run-length
    assert unique.data_page_offset - unique.dictionary_page_offset <= 16_384  # then plain pages
    default = io.BytesIO()
    pq.write_table(table, default)
    assert len(ours) < 0.75 * len(default.getvalue())
    assert pq.read_table(io.BytesIO(ours)).equals(table)
