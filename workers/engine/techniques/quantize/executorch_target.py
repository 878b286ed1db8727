"""The `quantize` step for a job whose target runtime is executorch: PT2E quantization with
ExecuTorch's XNNPACKQuantizer (int8 weights, one scale per output channel; int8 activations quantized
per call), lowered to an XNNPACK-delegated `.pte`. The embeddings stay fp32: XNNPACK quantizes the
matmuls, and torchao's int8 embedding ops have no ExecuTorch kernel in the runtime's Python bindings
("Missing out variants: torchao::dequantize_affine" when lowering).
"""

import logging

from workers.engine.export.executorch import PTE_FILE, export_pte
from workers.engine.loading import model_input_names
from workers.engine.state import ModelState, StepContext
from workers.engine.techniques.quantize.config import QuantizeConfig
from workers.engine.techniques.quantize.torch_target import skipped_linear_layers

logger = logging.getLogger(__name__)


def quantize_for_executorch(config: QuantizeConfig, state: ModelState, context: StepContext) -> ModelState:
    model = state.torch_model
    input_names = model_input_names(model, context.tokenizer)
    skipped = skipped_linear_layers(model, config.skip)
    context.on_progress(0.1)
    path = export_pte(
        model, state.task, input_names, context.work_dir / PTE_FILE, config.scheme,
        max_batch=context.max_batch, max_length=context.sequence_length, skip=skipped,
    )
    context.details.update(
        scheme=config.scheme,
        kernels="ExecuTorch XNNPACK (int8 weights per channel, int8 activations per call)",
        left_layers=skipped,
        embeddings_quantized=False,
        max_batch=context.max_batch,
        max_sequence_length=context.sequence_length,
    )
    context.placement.update(export="cpu", quantization="cpu")
    logger.info("quantize %s for executorch: %.2f MB .pte, %d layers skipped", config.scheme,
                path.stat().st_size / 1e6, len(skipped))
    context.on_progress(1.0)
    return ModelState(task=state.task, config_dir=state.config_dir, torch_model=model.to("cpu"), pte_path=path)
