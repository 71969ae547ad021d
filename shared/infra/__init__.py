"""Real local infrastructure as plain processes on loopback: Kafka (KRaft), Weaviate, Triton.

ClickHouse is the chdb engine inside the monitor, so it has no process here.
`python -m shared.infra up|down|status` (and `make infra-up` / `make infra-down`) drive it; test
fixtures use the same classes with their own state folder and ports.
"""
