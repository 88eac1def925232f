"""Per-layer diagnostics of a trained network (Sharma's probes)."""
