"""`llmops`: the command line for the local stack and, as capabilities land, ingest, ask and stats."""
