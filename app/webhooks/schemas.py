"""Response shapes of the webhooks API."""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class DeliveryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    job_id: str
    event: str = Field(description="job.queued, job.running, job.requeued, job.succeeded, job.failed or job.cancelled.")
    url: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_status_code: int | None = Field(description="The receiver's HTTP status on the last try.")
    last_error: str | None
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    created_at: datetime
    payload: dict[str, Any] = Field(description="The body sent (signed at each try).")


class WebhookSecret(BaseModel):
    secret: str = Field(description="Verify X-Compresso-Signature with it: HMAC-SHA256 of '<timestamp>.<body>'.")
