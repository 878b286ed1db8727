"""Compression of causal LMs through llm-compressor, run in its own environment (requirements-llm.txt)."""

from workers.engine.techniques.llm.config import LlmQuantizeConfig

__all__ = ["LlmQuantizeConfig"]
