"""Evaluation: verdicts, the position-fair judge, the report, and ``compare``."""
