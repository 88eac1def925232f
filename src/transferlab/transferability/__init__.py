"""Transferability estimators and their scoring against the sweep."""
