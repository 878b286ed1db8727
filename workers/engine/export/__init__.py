"""Turns models into runtime files (ONNX) that later steps and the package reuse."""
