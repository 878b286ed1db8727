"""What the SDK raises: the API's RFC 9457 problem details as exceptions, plus the outcomes of waiting."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from compresso.resources import Job


class CompressoError(Exception):
    """A request the server refused (4xx), failed (5xx) or never answered (`status` None).

    The fields are those of the problem document: `type` is stable (e.g. "/problems/not-found"),
    `detail` says what to fix, and `errors` points at the fields ({loc, msg, allowed}).
    """

    def __init__(
        self,
        status: int | None,
        type: str | None,  # noqa: A002 - the RFC 9457 member's name
        title: str,
        detail: str,
        errors: list[dict[str, Any]] | None = None,
        instance: str | None = None,
    ):
        super().__init__(detail or title)
        self.status = status
        self.type = type
        self.title = title
        self.detail = detail
        self.errors = errors or []
        self.instance = instance

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status, "type": self.type, "title": self.title, "detail": self.detail,
            "instance": self.instance, "errors": self.errors,
        }


class Unauthorized(CompressoError):
    """401: no key, or a wrong, revoked or expired one."""


class NotFound(CompressoError):
    """404: no such object for this key's tenant."""


class Conflict(CompressoError):
    """409: the object's state forbids it (a model in use, a job already finished)."""


class InvalidRequest(CompressoError):
    """422: a field failed validation; `errors` names each one."""


class ConnectionFailed(CompressoError):
    """The server could not be reached, or the connection broke before the answer was complete."""

    def __init__(self, detail: str):
        super().__init__(None, None, "Connection failed", detail)


class ChecksumMismatch(CompressoError):
    """A download's bytes do not hash to the sha256 the server announced; nothing was kept."""

    def __init__(self, detail: str):
        super().__init__(None, None, "Checksum mismatch", detail)


class JobFailed(Exception):
    """Waiting ended with the job failed or cancelled; `job` is its last state, `job.error` the reason."""

    def __init__(self, job: Job):
        super().__init__(f"Job {job.id} {job.status}" + (f": {job.error}" if job.error else ""))
        self.job = job


class WaitTimeout(TimeoutError):
    """The job was still queued or running when the wait's timeout ran out; `job` is its last state."""

    def __init__(self, job: Job, timeout: float):
        super().__init__(f"Job {job.id} still {job.status} after {timeout:g}s")
        self.job = job
        self.timeout = timeout


_BY_STATUS: dict[int, type[CompressoError]] = {401: Unauthorized, 404: NotFound, 409: Conflict, 422: InvalidRequest}


def error_from_response(response: httpx.Response) -> CompressoError:
    """The problem document of an error response; a body that is not one (a proxy's page) still gives an error."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        text = response.text.strip()[:500]
        body = {"title": response.reason_phrase, "detail": text or f"HTTP {response.status_code}"}
    cls = _BY_STATUS.get(response.status_code, CompressoError)
    return cls(
        response.status_code,
        body.get("type"),
        str(body.get("title") or response.reason_phrase),
        str(body.get("detail") or body.get("title") or ""),
        body.get("errors") if isinstance(body.get("errors"), list) else None,
        body.get("instance"),
    )
