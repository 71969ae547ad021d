"""Shared runtime of the llmops services: settings, bus, dead-lettering, retries, gRPC, observability."""
