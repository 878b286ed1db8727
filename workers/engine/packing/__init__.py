"""Lossless packing of quantized models: the Huffman code, the .cpz container, and the ONNX symbol finder.

The container and the code need numpy and the standard library only; onnx_symbols alone imports onnx.
"""
