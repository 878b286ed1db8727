"""When a running job must stop: its soft and hard time limits, and each step's own soft limit.

The worker checks these while it supervises the engine: past a soft limit it asks the engine to
stop (SIGTERM, so the engine unwinds and its files are removed) and the job ends `timed_out`; an
engine still alive at the hard limit is killed. A step's limit starts when the engine reports that
step's stage; its hard limit is the soft one plus a grace period.
"""

import time
from dataclasses import dataclass, field
from typing import Any

from app.config import TimeLimitSettings
from workers.engine.stages import step_number


@dataclass
class Deadlines:
    job_soft_seconds: float
    job_hard_seconds: float
    step_soft_seconds: dict[int, float]  # step number (1-based) -> its soft limit
    grace_seconds: float
    started: float = field(default_factory=time.monotonic)
    step: int | None = None
    step_started: float = 0.0
    soft_reason: str | None = None  # set once the soft limit has been reached
    hard_at: float | None = None

    @classmethod
    def for_job(
        cls, settings: TimeLimitSettings, job_limits: dict[str, Any] | None, recipe: dict[str, Any]
    ) -> "Deadlines":
        limits = job_limits or {}
        soft = limits.get("soft_seconds") or settings.soft_seconds
        hard = limits.get("hard_seconds") or max(settings.hard_seconds, soft)
        steps = {}
        for number, step in enumerate(recipe.get("steps", []), start=1):
            own = (step.get("params") or {}).get("time_limit_seconds")
            default = settings.per_technique.get(step.get("technique", ""))
            if own or default:
                steps[number] = float(own or default)
        return cls(float(soft), float(hard), steps, settings.grace_seconds)

    def on_stage(self, stage: str) -> None:
        number = step_number(stage)
        if number != self.step:
            self.step, self.step_started = number, time.monotonic()

    def soft_limit_passed(self, now: float) -> str | None:
        """The reason, the first time a soft limit is passed; the caller then asks the engine to stop."""
        if self.soft_reason is not None:
            return None
        if now - self.started > self.job_soft_seconds:
            self.soft_reason = f"the job ran past its soft time limit of {self.job_soft_seconds:g} s"
            self.hard_at = self.started + self.job_hard_seconds
        elif self.step in self.step_soft_seconds and now - self.step_started > self.step_soft_seconds[self.step]:
            self.soft_reason = (
                f"step {self.step} ran past its time limit of {self.step_soft_seconds[self.step]:g} s"
            )
            self.hard_at = min(now + self.grace_seconds, self.started + self.job_hard_seconds)
        return self.soft_reason

    def hard_limit_passed(self, now: float) -> str | None:
        if now - self.started > self.job_hard_seconds:
            return f"the job ran past its hard time limit of {self.job_hard_seconds:g} s and was killed"
        if self.hard_at is not None and now > self.hard_at:
            return f"{self.soft_reason}, and had not stopped {self.grace_seconds:g} s later: it was killed"
        return None
