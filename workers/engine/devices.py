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
