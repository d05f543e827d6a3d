"""The method, with no I/O: wire types, the planner, the flows, strategies, exemplars, templates,
token counts, the model table, settings, results and errors. Imports nothing above it."""
