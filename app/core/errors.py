"""Errors that the services raise and the one handler in app.main turns into HTTP answers."""


class AppError(Exception):
    """A failure the caller can fix. `status_code` is the HTTP status; `detail` says what to fix."""

    status_code = 400
    headers: dict[str, str] = {}
    # The RFC 9457 `type` slug (app.core.problems); None: the one of the status code.
    problem: str | None = None

    def __init__(
        self,
        detail: str,
        *,
        status_code: int | None = None,
        errors: list[dict] | None = None,
        headers: dict[str, str] | None = None,
        problem: str | None = None,
    ):
        super().__init__(detail)
        self.detail = detail
        if status_code is not None:
            self.status_code = status_code
        self.errors = errors or []
        if headers is not None:
            self.headers = headers
        if problem is not None:
            self.problem = problem


class Unauthorized(AppError):
    status_code = 401
    headers = {"WWW-Authenticate": "Bearer"}


class NotFound(AppError):
    status_code = 404


class Conflict(AppError):
    status_code = 409


class Invalid(AppError):
    status_code = 422


class PayloadTooLarge(AppError):
    status_code = 413


class ServiceUnavailable(AppError):
    status_code = 503


class TooManyRequests(AppError):
    status_code = 429
