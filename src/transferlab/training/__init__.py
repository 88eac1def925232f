"""Training: the one loop, variants and the sweep grid, pretraining, the store, executors."""
