"""Where a model's tensors live. Every tensor a technique makes (batches, masks, indices, codebooks)
follows the model's device, so a cuda job never mixes in a CPU tensor, and never quietly moves the
model to the CPU to avoid one."""

import torch


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of the module's first parameter (or buffer); the CPU for a module with neither."""
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


def to_device(batch: dict[str, torch.Tensor], device: torch.device | str) -> dict[str, torch.Tensor]:
    return {name: tensor.to(device) for name, tensor in batch.items()}


def synchronize(device: torch.device | str) -> None:
    """Waits for the device's queued work, so a timer stops when the work is really done."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class GpuMemoryPeak:
    """The most GPU memory torch's allocator held since the last `reset` (None when there is no GPU)."""

    def __init__(self) -> None:
        self.enabled = torch.cuda.is_available()

    def reset(self) -> None:
        if self.enabled:
            torch.cuda.reset_peak_memory_stats()

    def megabytes(self) -> float | None:
        return torch.cuda.max_memory_allocated() / 2**20 if self.enabled else None
