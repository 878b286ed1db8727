"""Per-architecture knowledge, kept as data tables rather than branches in generic code."""
