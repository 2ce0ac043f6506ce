"""The stream runtime: the Faust app and the worker's per-batch steps, the state committed to
Redis, ranking and the ranker's hot swap, review sentiment, the trainer and its model store,
erasure and the worker's metrics."""
