"""The data contract: the events producers send, the dead-letter records, the topics and the
Redis key layout readers rely on."""
