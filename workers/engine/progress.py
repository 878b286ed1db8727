"""A job's progress: each phase reports its own 0..1, mapped onto its slice of the job's progress bar."""

from collections.abc import Callable

ProgressCallback = Callable[[str, float], None]


class JobProgress:
    """Maps a phase's own 0..1 onto its slice of the job's progress; `announce` passes a step's other events
    (a federated step's address) to the caller."""

    def __init__(self, callback: ProgressCallback, announce: Callable[[dict], None]):
        self.callback, self.announce = callback, announce

    def __call__(self, stage: str, span: tuple[float, float], fraction: float) -> None:
        start, end = span
        self.callback(stage, round(start + (end - start) * min(max(fraction, 0.0), 1.0), 4))

    def phases(self, prefix: str, span: tuple[float, float]) -> Callable[[str, float], None]:
        """For evaluate_model: its "outputs" phase takes the first 40% of `span`, "latency" the rest."""
        middle = span[0] + (span[1] - span[0]) * 0.4
        spans = {"outputs": (span[0], middle), "latency": (middle, span[1])}
        return lambda phase, fraction: self(f"{prefix}.{phase}", spans[phase], fraction)
