"""gateway: The public gRPC API: queries, ingest, delete and feedback."""
