"""I/O: the model session and what it owns (transports, the local backend, drivers, retry,
budget ledger, rate limits, cache). Imports only the method below it."""
