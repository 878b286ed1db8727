"""The `quantize` technique's params: the scheme, which layers it touches, and the accuracy-aware mode."""

import re
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from workers.engine.registry import TechniqueConfig
from workers.engine.training.settings import QatSettings

Scheme = Literal["int8_dynamic", "int8_weight_only", "int4_weight_only", "int8_static", "fp16", "bf16", "fp8"]
LayerGroup = Literal["ffn_input", "ffn_output"]
Int4Algorithm = Literal["rtn", "hqq"]
CalibrationMethod = Literal["minmax", "entropy", "percentile"]
FallbackMode = Literal["fp32", "weight_only", "outliers"]

# Schemes where a layer left in fp32 buys fidelity back; the others are within ~1e-3 of fp32 already.
FALLBACK_SCHEMES = ("int8_dynamic", "int8_static", "int4_weight_only")
# Schemes that quantize activations, where smoothing and a weight-only fallback have something to fix.
ACTIVATION_SCHEMES = ("int8_dynamic", "int8_static")
DEFAULT_GROUP_SIZE = 32
DEFAULT_MAX_SIZE_RATIO = 0.30
DEFAULT_OUTLIER_CHANNELS = 8
# Schemes quantization-aware training reproduces (qat.py): onnxruntime's int8 and 4-bit grids.
QAT_SCHEMES = ("int8_dynamic", "int8_static", "int4_weight_only")


class QuantizeConfig(TechniqueConfig):
    technique: ClassVar[str] = "quantize"
    version: ClassVar[int] = 1
    description: ClassVar[str] = (
        "Exports the model to ONNX and stores its weights in fewer bits for onnxruntime. "
        "int8_dynamic: int8 weights, activations quantized per call (about 4x smaller, ~1.6x faster on CPU); "
        "int8_weight_only: int8 weights, fp32 compute (most faithful int8, not faster); "
        "int4_weight_only: 4-bit weights in groups (MatMulNBits, about 6x smaller); "
        "int8_static: int8 weights and activations calibrated on the dataset; "
        "fp16 / bf16: half-precision storage, computed in fp32 (onnxruntime has few fp16 CPU kernels). "
        "Embeddings are quantized too (one scale per row at int8). With target_fidelity, the most sensitive "
        "layers fall back (to fp32, or to int8 weight-only with fallback weight_only) until the fidelity on the "
        "dataset holds; smooth_alpha migrates activation outliers into the weights first, outlier_channels computes "
        "them apart in fp32. Must be the last step. "
        'For a job whose target runtime is torch, the same step quantizes with torchao instead and ships a '
        "transformers folder: fp16 / bf16 (cast), int8_weight_only, int8_dynamic, int4_weight_only (cuda) and fp8 "
        "(dynamic fp8 activations and fp8 weights, cuda with fp8 tensor cores); skip, embeddings and group_size "
        "apply there."
    )
    # int8_static calibrates, and target_fidelity measures, on the job's dataset (or the
    # builtin sentences when none is given).
    requires_data: ClassVar[bool] = True
    output_format: ClassVar[Literal["onnx"]] = "onnx"

    scheme: Scheme = Field(description="How weights (and activations) are stored and computed; see the description.")
    per_channel: bool = Field(
        True,
        description="int8_dynamic / int8_static: one weight scale per output channel instead of one per tensor "
        "(0.993 vs 0.962 cosine on MiniLM).",
    )
    group_size: int | None = Field(
        None,
        description="int4_weight_only: weights per scale, a power of two from 16 to 256 (default 32). "
        "Smaller groups are more faithful and larger.",
    )
    algorithm: Int4Algorithm | None = Field(
        None,
        description="int4_weight_only: rtn (round to nearest, default) or hqq (half-quadratic optimisation of "
        "scales and zero points: 0.974 vs 0.971 cosine on MiniLM, ~20x slower to quantize).",
    )
    calibration_method: CalibrationMethod | None = Field(
        None,
        description="int8_static: how activation ranges are chosen from the dataset (default percentile: "
        "0.9896 held-out cosine on MiniLM against 0.9895 for minmax and 0.9893 for entropy; with smooth_alpha "
        "0.5, 0.9959 at 2.4x fp32's speed at batch 32).",
    )
    modules: list[str] | None = Field(
        None,
        description="Regular expressions searched in module names (e.g. 'encoder.layer.0.output.dense'); only "
        "matching layers are quantized. Empty: every Linear layer and embedding.",
    )
    skip: list[str] = Field(
        default_factory=list,
        description="Regular expressions searched in module names; matching layers are left as they are.",
    )
    embeddings: bool = Field(
        True,
        description="Quantize the embedding tables too. They are about half of a small encoder and cost "
        "almost no fidelity (int8 with one scale per row).",
    )
    keep_fp32: list[LayerGroup] = Field(
        default_factory=list,
        description="Layer groups left in fp32, where activation outliers make int8 costly. Each costs size.",
    )
    target_fidelity: float | None = Field(
        None,
        gt=0,
        le=1,
        description="int8_dynamic / int8_static / int4_weight_only: measure the task's fidelity metric on the "
        "dataset against the original and leave the most sensitive layers in fp32 until it holds (within "
        "max_size_ratio). The report says which layers fell back and the fidelity reached.",
    )
    fallback: FallbackMode = Field(
        "fp32",
        description="With target_fidelity, what a sensitive layer falls back to. fp32: full precision, costs "
        "size (bounded by max_size_ratio). weight_only (int8_dynamic / int8_static): int8 weights with fp32 "
        "activations, costs speed but no size; layers are chosen by fidelity gained per multiply-add given up. "
        "outliers (int8_dynamic): the layer stays int8, with its outlier_channels (default 8) input channels of "
        "largest activation computed apart in fp32; costs a little speed and size.",
    )
    smooth_alpha: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="int8_dynamic / int8_static: SmoothQuant scale migration before quantizing. Each layer's "
        "input channel j is divided by s_j = max|x_j|^alpha / max|w_j|^(1-alpha) (measured on the dataset) and "
        "its weights multiplied by s_j, moving activation outliers into the weights. 0.5 is the usual choice.",
    )
    outlier_channels: int | None = Field(
        None,
        ge=0,
        le=256,
        description="int8_dynamic: in each quantized layer, this many input channels with the largest "
        "activations on the dataset are multiplied in fp32 by a small side MatMul and left out of the int8 one, "
        "whose activations are then quantized on a range without their outliers (LLM.int8()'s decomposition). "
        "With fallback 'outliers', only the layers the fallback picks. On all-MiniLM-L6-v2, 8 in every layer "
        "lifted fidelity from 0.992 to 0.9986 for 3% more bytes, at 0.75x the speed of plain int8_dynamic.",
    )
    qat: QatSettings | None = Field(
        None,
        description="int8_dynamic / int8_static / int4_weight_only: quantization-aware training before export. A "
        "copy of the model is fine-tuned on the dataset against the original (the distillation loss of "
        "distill and recover) while every quantized layer computes with onnxruntime's own rounding: int8 "
        "weights per channel, 4-bit weights in groups, uint8 activations per tensor (int8_static's ranges "
        "are fixed from the dataset first and handed to onnxruntime as they were trained). Costs training "
        "time; wins where post-training quantization loses fidelity. Give {} for the defaults.",
    )
    max_size_ratio: float | None = Field(
        None,
        gt=0,
        le=1,
        description="With target_fidelity: the largest result, as a fraction of the fp32 ONNX export, that "
        f"fallback may reach (default {DEFAULT_MAX_SIZE_RATIO}).",
    )

    @field_validator("modules", "skip")
    @classmethod
    def _patterns_compile(cls, patterns: list[str] | None) -> list[str] | None:
        for pattern in patterns or []:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {pattern!r} is not a valid regular expression: {exc}") from exc
        return patterns

    @field_validator("group_size")
    @classmethod
    def _group_size_power_of_two(cls, value: int | None) -> int | None:
        if value is not None and (value < 16 or value > 256 or value & (value - 1)):
            raise ValueError(f"group_size must be a power of two from 16 to 256, not {value}")
        return value

    @model_validator(mode="after")
    def _params_fit_the_scheme(self) -> "QuantizeConfig":
        given = self.model_fields_set
        only_for = {
            "per_channel": ("int8_dynamic", "int8_static"),
            "group_size": ("int4_weight_only",),
            "algorithm": ("int4_weight_only",),
            "calibration_method": ("int8_static",),
            "target_fidelity": FALLBACK_SCHEMES,
            "smooth_alpha": ACTIVATION_SCHEMES,
            "outlier_channels": ("int8_dynamic",),
            "qat": QAT_SCHEMES,
        }
        for param, schemes in only_for.items():
            value = getattr(self, param)
            # A stored recipe lists every param with its default (per_channel: true), so only a value that
            # differs from the default says the user meant it for this scheme.
            if param in given and value is not None and value != type(self).model_fields[param].default \
                    and self.scheme not in schemes:
                raise ValueError(
                    f"{param} only applies to scheme {' or '.join(schemes)}; remove it for scheme {self.scheme!r}"
                )
        if self.qat is not None:
            # Each of these re-chooses weights or ranges after training, off the grid training learned.
            clashes = {
                "smooth_alpha": self.smooth_alpha is not None,
                "outlier_channels": bool(self.outlier_channels),
                "fallback 'outliers'": self.fallback == "outliers",
                "algorithm 'hqq'": self.algorithm == "hqq",
            }
            for name, clash in clashes.items():
                if clash:
                    raise ValueError(
                        f"qat trains for onnxruntime's round-to-nearest grid; {name} would change the grid "
                        "after training. Remove one of them"
                    )
        if self.max_size_ratio is not None and self.target_fidelity is None:
            raise ValueError("max_size_ratio only bounds the fallback of target_fidelity; give target_fidelity too")
        if self.fallback != "fp32":
            if self.target_fidelity is None:
                raise ValueError("fallback only applies with target_fidelity; give target_fidelity too")
            schemes = ACTIVATION_SCHEMES if self.fallback == "weight_only" else ("int8_dynamic",)
            if self.scheme not in schemes:
                raise ValueError(
                    f"fallback {self.fallback!r} only applies to scheme {' or '.join(schemes)} (scheme "
                    f"{self.scheme!r} has no quantized activations to give up); use fallback 'fp32'"
                )
            if self.max_size_ratio is not None:
                raise ValueError(
                    f"max_size_ratio bounds fallback 'fp32' only ({self.fallback} costs no size); remove it"
                )
        return self

    def channels_apart(self) -> int:
        """Outlier channels per layer that is split: those given, or 8 for the 'outliers' fallback."""
        return self.outlier_channels if self.outlier_channels is not None else DEFAULT_OUTLIER_CHANNELS

    def splits_every_layer(self) -> bool:
        return bool(self.outlier_channels) and self.fallback != "outliers"
