"""monitor: Streams telemetry into ClickHouse and answers ops queries."""
