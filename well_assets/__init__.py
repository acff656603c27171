"""well-assets: a Dagster code location importing OData v4 well production into DuckDB."""

__version__ = "0.1.0"
