"""Activations at named layers and the feature file format."""
