"""The `prune` technique: its params in config.py, its handler in handler.py (imported only where a
job runs, so that the API validates recipes without importing torch)."""

from workers.engine.techniques.prune.config import PruneConfig

__all__ = ["PruneConfig"]
