"""The `huffman` technique's params (the handler is workers.engine.techniques.huffman): kept apart
so that the API validates recipes without importing the packing code."""

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from workers.engine.packing.cpz import CpzError, check_entry_name
from workers.engine.registry import TechniqueConfig


class HuffmanConfig(TechniqueConfig):
    technique: ClassVar[str] = "huffman"
    version: ClassVar[int] = 1
    description: ClassVar[str] = (
        "Losslessly Huffman-codes the 8-bit weights left by a quantize or cluster step into a .cpz file "
        "(MiniLM: 24% smaller than its int8 ONNX). `compresso unpack` restores the runnable folder bit for bit."
    )
    input_format: ClassVar[Literal["onnx"]] = "onnx"
    output_format: ClassVar[Literal["packed"]] = "packed"

    file_name: str = Field("model.cpz", description="Name of the packed file: a plain file name ending in .cpz.")
    min_elements: int = Field(
        4096,
        ge=1,
        description="Integer tensors with fewer values than this are not worth a code table (256 bytes) "
        "and are stored with the literal bytes.",
    )

    @field_validator("file_name")
    @classmethod
    def _plain_cpz_name(cls, value: str) -> str:
        try:
            check_entry_name(value)
        except CpzError as exc:
            raise ValueError(f"file_name {value!r} must be a plain file name, without folders") from exc
        if not value.endswith(".cpz") or value == ".cpz":
            raise ValueError(f"file_name {value!r} must end in .cpz, e.g. 'model.cpz'")
        return value
