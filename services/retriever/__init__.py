"""retriever: Keeps chunks in Weaviate (multi-tenant, hybrid search) and returns grounding context."""
