"""Clients of the contract: sending events to Kafka and reading recommendations from Redis."""
