"""Operator tools: the ``tastemaker`` CLI, the local stack and process supervision, the demo,
the data-set replay and loaders, namespaces for tests and benchmarks, and the in-process
reference the tests and benchmarks compare the stream with."""
