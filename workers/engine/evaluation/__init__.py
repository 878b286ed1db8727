"""Measures a model: its outputs against the original (fidelity), labelled quality, and latency."""
