"""Query engines: bind the logical lake table names to an engine (DuckDB locally, Spark at scale)."""
