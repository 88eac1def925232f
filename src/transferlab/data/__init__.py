"""Datasets, class splits, held-out test parts and nested subsamples."""
