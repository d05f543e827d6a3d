"""Datasets: items and the one JSONL reader/writer, output-file safety, the worker pool,
progress, ``generate`` and Batch API files. Built on the session and the method."""
