"""The warehouse loader: applies processed Parquet files to the PostgreSQL star schema.

Each file is applied in one transaction: the mirror of the source tables (position-guarded), then
the dimension rows the file touches, then one fact row per version. See docs/warehouse_loader.md.
"""
