"""embedder: Chunks documents and embeds chunks and queries with a sentence-embedding model."""
