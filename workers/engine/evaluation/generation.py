"""How fast a causal LM generates, the figures LLM serving is judged by: time to first token, prefill
tokens per second and decode tokens per second, at each batch size, with transformers' own KV-cache
generation on the target's device. The original and the result get the same prompts.

Prefill is one forward pass over the prompts (which also yields the first new token); decoding is the
rest of a greedy `generate` of a fixed number of tokens, so its rate is (new tokens - 1) x batch over
the time generate takes beyond that forward pass.
"""

import time
from collections.abc import Callable

import numpy as np
import torch

from workers.engine.devices import synchronize
from workers.engine.report import GenerationReport, GenerationStats

PROMPT_TOKENS = 128
NEW_TOKENS = 32
REPEATS = 3


def prompt_length(max_positions: int | None) -> int:
    """PROMPT_TOKENS, or fewer where the model's context must also hold the new tokens."""
    if max_positions:
        return max(min(PROMPT_TOKENS, max_positions - NEW_TOKENS), 1)
    return PROMPT_TOKENS


def make_prompts(ids: np.ndarray, batch: int, length: int) -> torch.Tensor:
    """`batch` rows of `length` tokens cut from the stream (repeated when it is short): no padding, so
    every row does the same work."""
    needed = batch * length
    repeated = np.resize(ids, needed) if len(ids) < needed else ids[:needed]
    return torch.from_numpy(np.ascontiguousarray(repeated).reshape(batch, length))


def greedy_generate(model: torch.nn.Module, prompts: torch.Tensor) -> Callable[[], None]:
    """A call that generates exactly NEW_TOKENS tokens greedily after every prompt row."""
    pad = model.generation_config.pad_token_id
    if pad is None:
        pad = model.generation_config.eos_token_id
    pad = pad[0] if isinstance(pad, list) else pad
    mask = torch.ones_like(prompts)

    def generate() -> None:
        with torch.inference_mode():
            model.generate(
                input_ids=prompts, attention_mask=mask, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                do_sample=False, pad_token_id=pad,
            )

    return generate


def _timed(device: str, call) -> float:  # noqa: ANN001
    synchronize(device)
    started = time.perf_counter()
    call()
    synchronize(device)
    return time.perf_counter() - started


@torch.inference_mode()
def measure_generation(
    model: torch.nn.Module, ids: np.ndarray, device: str, batch_sizes: list[int], max_positions: int | None,
    repeats: int = REPEATS,
) -> GenerationReport:
    prompt_tokens = prompt_length(max_positions)
    model = model.eval()
    stats = {}
    for batch in batch_sizes:
        prompts = make_prompts(ids, batch, prompt_tokens).to(device)
        mask = torch.ones_like(prompts)

        def prefill() -> None:
            model(input_ids=prompts, attention_mask=mask, use_cache=True)

        generate = greedy_generate(model, prompts)

        prefill()  # warm-up: the first call pays for allocations and kernel selection
        generate()
        prefill_s = float(np.median([_timed(device, prefill) for _ in range(repeats)]))
        generate_s = float(np.median([_timed(device, generate) for _ in range(repeats)]))
        decode_s = max(generate_s - prefill_s, 1e-9)
        stats[f"batch_{batch}"] = GenerationStats(
            time_to_first_token_ms=prefill_s * 1000,
            prefill_tokens_per_s=batch * prompt_tokens / prefill_s,
            decode_tokens_per_s=batch * (NEW_TOKENS - 1) / decode_s,
            generate_s=generate_s,
        )
    return GenerationReport(
        prompt_tokens=prompt_tokens, new_tokens=NEW_TOKENS, device=device, repeats=repeats, batches=stats
    )
