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
    """The most GPU memory torch's allocator held, over a segment (a step) and over the whole job;
    None without a GPU. torch keeps one peak counter per process, so one object owns it for the job."""

    def __init__(self) -> None:
        self.enabled = torch.cuda.is_available()
        self._highest = 0
        if self.enabled:
            torch.cuda.reset_peak_memory_stats()

    def start_segment(self) -> None:
        if self.enabled:
            self._highest = max(self._highest, torch.cuda.max_memory_allocated())
            torch.cuda.reset_peak_memory_stats()

    def segment_mb(self) -> float | None:
        return torch.cuda.max_memory_allocated() / 2**20 if self.enabled else None

    def job_mb(self) -> float | None:
        return max(self._highest, torch.cuda.max_memory_allocated()) / 2**20 if self.enabled else None
