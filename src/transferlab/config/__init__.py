"""Typed, validated params: field specs, the two params files, presets."""
