"""The `quantize` technique: its params in config.py, its handler in handler.py (imported only where a
job runs, so that the API validates recipes without importing onnx or torch)."""

from workers.engine.techniques.quantize.config import QuantizeConfig

__all__ = ["QuantizeConfig"]
