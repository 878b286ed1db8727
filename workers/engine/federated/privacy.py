"""Site-level differential privacy for the federated step (the coordinator's side): each round, every site's
change to the round's weights is clipped to an L2 norm, the clipped changes are averaged, and Gaussian noise
is added to their sum, so that what the coordinator sends out, and the result, hide whether any one site took
part. The coordinator counts the privacy spent (epsilon) with Google's dp-accounting.

Why not Flower's DifferentialPrivacyServerSideFixedClipping wrapper: it adds noise to every coordinate,
including the token embeddings no site trains and the weights that earlier steps pruned (a model would lose
its zeros, and its embeddings would take noise for nothing), it averages by examples (a site's weight would
then exceed 1/n, which its noise does not cover), and it drops a whole round when any site fails, which the
step tolerates down to min_sites_per_round. The mechanism is Flower's (clip, then noise of std z x C on the
sum); only where it applies differs. Needs only numpy."""

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class RoundPrivacy:
    """What one round's mechanism did: each site's change before clipping, and which were clipped."""

    update_norms: dict[str, float]
    clipped: list[str]
    noise_std: float


@dataclass
class SitePrivacy:
    noise_multiplier: float
    clipping_norm: float
    delta: float
    # Names of the arrays sites train; the others (frozen embeddings, buffers) no site may change.
    trained: set[str]
    # Names of arrays pruned by earlier steps: their zeros stay zero.
    masked: set[str]
    # q: the chance that a round takes a given site (the coordinator samples; the accountant counts it).
    site_sampling_rate: float = 1.0
    rng: np.random.Generator = field(default_factory=np.random.default_rng)  # the OS's entropy: never a seed

    def aggregate(
        self, names: list[str], current: list[np.ndarray], site_arrays: dict[str, list[np.ndarray]],
        denominator: float | None = None,
    ) -> tuple[list[np.ndarray], RoundPrivacy]:
        """The round's new weights: current + (sum of clipped changes + noise) / denominator. The denominator
        is the number of sites that sent changes unless given: with sites sampled, the expected number sampled
        (McMahan et al. 2018's fixed-denominator estimator: a count that depends on who took part would reveal
        it). With no site at all, the round's weights move by the noise alone, as the guarantee needs."""
        kept = [self._kept(name, array) for name, array in zip(names, current, strict=True)]
        total = [np.zeros_like(array) for array in current]
        norms, clipped = {}, []
        for site, arrays in sorted(site_arrays.items()):
            change = [np.where(keep, new - old, 0.0).astype(np.float32)
                      for keep, new, old in zip(kept, arrays, current, strict=True)]
            norm = math.sqrt(math.fsum(float(np.square(part, dtype=np.float64).sum()) for part in change))
            norms[site] = norm
            scale = min(1.0, self.clipping_norm / norm) if norm > 0 else 1.0
            if scale < 1.0:
                clipped.append(site)
            for accumulated, part in zip(total, change):
                accumulated += part * np.float32(scale)
        std = self.noise_multiplier * self.clipping_norm
        count = denominator if denominator is not None else len(site_arrays)
        result = []
        for keep, old, accumulated in zip(kept, current, total):
            if keep is False:
                result.append(old)
                continue
            noise = self.rng.normal(0.0, std, size=old.shape).astype(np.float32)
            result.append(old + np.where(keep, accumulated + noise, 0.0).astype(np.float32) / np.float32(count))
        return result, RoundPrivacy(update_norms=norms, clipped=clipped, noise_std=std / count)

    def _kept(self, name: str, current: np.ndarray) -> np.ndarray | bool:
        """Where a site may change the weights: nowhere in what no site trains, and not on pruned zeros."""
        if name not in self.trained:
            return False
        if name in self.masked:
            return current != 0
        return True
