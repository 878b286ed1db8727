"""How the weights travel between the coordinator and the sites (the step's transfer_precision): as they
are, in float32, or in half precision, where the weights go out in float16 and each site's change to them
comes back in float16; the coordinator keeps float32 and adds the changes to it, so rounding does not pile
up over the rounds (a change is small, and float16 keeps about three significant digits of it). Numpy
only: the coordinator imports it without torch."""

import numpy as np

HALF = "float16"


HALF_MAX = float(np.finfo(np.float16).max)


def _fits_half(array: np.ndarray) -> bool:
    """Whether every value is finite within float16's range. A buffer that holds a large sentinel (a -1e9
    attention mask) would become -inf, and its change inf - inf = nan: such an array travels in float32."""
    return bool(np.isfinite(array).all()) and (array.size == 0 or float(np.abs(array).max()) <= HALF_MAX)


def outgoing(arrays: list[np.ndarray], precision: str) -> list[np.ndarray]:
    """The round's weights as they travel to the sites."""
    if precision != HALF:
        return arrays
    return [array.astype(np.float16) if _fits_half(array) else array for array in arrays]


def site_reply(trained: list[np.ndarray], received: list[np.ndarray], precision: str) -> list[np.ndarray]:
    """What a site sends back: its trained weights, or in half precision its change to the weights it received
    (in the precision that array came in)."""
    if precision != HALF:
        return trained
    return [(new - np.asarray(old, dtype=np.float32)).astype(old.dtype) for new, old in zip(trained, received, strict=True)]


def site_weights(reply: list[np.ndarray], current: list[np.ndarray], precision: str) -> list[np.ndarray]:
    """A site's trained weights, in float32, from its reply and the coordinator's own copy of the round's weights."""
    if precision != HALF:
        return reply
    return [base + change.astype(np.float32) for base, change in zip(current, reply, strict=True)]
