"""Metrics, tables and plots from the result files (imports no torch)."""
