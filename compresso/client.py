"""`compresso.Client`: the /v1 API over HTTP, with typed results, retries that are safe to repeat,
and uploads and downloads streamed from and to disk."""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from compresso.errors import ChecksumMismatch, ConnectionFailed, JobFailed, WaitTimeout, error_from_response
from compresso.files import ARCHIVE_SUFFIXES, ByteProgress, ProgressReader, archive_name, load_document, zip_folder
from compresso.resources import Dataset, Job, Model, Site

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 60.0
DEFAULT_RETRIES = 3
# Transient answers: a proxy or the server between restarts (502/504), the database away (503), a limit (429).
RETRY_STATUSES = {429, 502, 503, 504}
RETRY_BACKOFF_SECONDS = 0.5
# A Retry-After longer than this is not waited out: the caller hears of the refusal instead.
MAX_RETRY_AFTER_SECONDS = 60.0
_CHUNK = 1 << 20
_LOG_PAGE = 1000  # the most the logs endpoint gives at once
_RETRIED_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)

PathLike = str | os.PathLike[str]


class Client:
    """A session with one compresso server.

    `url` defaults to $COMPRESSO_URL, then http://127.0.0.1:8000; `api_key` to $COMPRESSO_API_KEY (the
    embedded default on loopback needs none). Failed requests raise `CompressoError` (or a subclass).
    Creations send an `Idempotency-Key` (the caller's, or a new UUID), so a request retried after a
    transient failure replays the first answer instead of creating twice.
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        *,
        retries: int = DEFAULT_RETRIES,
        transport: httpx.BaseTransport | None = None,
    ):
        self.url = (url or os.environ.get("COMPRESSO_URL") or DEFAULT_URL).rstrip("/")
        api_key = api_key if api_key is not None else os.environ.get("COMPRESSO_API_KEY")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.retries = retries
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # Models and datasets

    def upload_model(
        self, path: PathLike, name: str | None = None, *, idempotency_key: str | None = None,
        on_progress: ByteProgress | None = None,
    ) -> Model:
        """Uploads a model folder (zipped into a temporary file on the way) or a .zip/.tar.gz of one."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"No model folder or archive at {path}.")
        if path.is_dir():
            with tempfile.TemporaryDirectory(prefix="compresso-") as scratch:
                archive = zip_folder(path, Path(scratch) / f"{archive_name(path) or 'model'}.zip")
                return self.upload_model(archive, name or archive_name(path), idempotency_key=idempotency_key,
                                         on_progress=on_progress)
        if not path.name.lower().endswith(ARCHIVE_SUFFIXES):
            raise ValueError(f"{path} is neither a model folder nor a {', '.join(ARCHIVE_SUFFIXES)} archive.")
        name = name or archive_name(path)
        return Model.from_api(self._upload("/v1/models", path, name, idempotency_key, on_progress))

    def upload_dataset(
        self, path: PathLike, name: str | None = None, *, idempotency_key: str | None = None,
        on_progress: ByteProgress | None = None,
    ) -> Dataset:
        """Uploads an evaluation dataset: a .jsonl or .csv file (columns text, text_pair, label, slice)."""
        path = Path(path)
        return Dataset.from_api(self._upload("/v1/datasets", path, name or path.stem, idempotency_key, on_progress))

    def models(self, created_since: datetime | str | None = None) -> Iterator[Model]:
        """Every model, newest first, following the pages."""
        return (Model.from_api(item) for item in self._pages("/v1/models", created_since=created_since))

    def datasets(self, created_since: datetime | str | None = None) -> Iterator[Dataset]:
        return (Dataset.from_api(item) for item in self._pages("/v1/datasets", created_since=created_since))

    def model(self, model_id: str) -> Model:
        return Model.from_api(self._request("GET", f"/v1/models/{model_id}").json())

    def dataset(self, dataset_id: str) -> Dataset:
        return Dataset.from_api(self._request("GET", f"/v1/datasets/{dataset_id}").json())

    def delete_model(self, model_id: str) -> None:
        """Refused (Conflict) while a queued or running job uses the model."""
        self._request("DELETE", f"/v1/models/{model_id}")

    def delete_dataset(self, dataset_id: str) -> None:
        self._request("DELETE", f"/v1/datasets/{dataset_id}")

    def dataset_versions(self, dataset_id: str) -> list[Dataset]:
        """Every version of the dataset, oldest first."""
        return [Dataset.from_api(item) for item in self._request("GET", f"/v1/datasets/{dataset_id}/versions").json()]

    def label_rows(self, dataset_id: str, labels: dict[int, str | None]) -> Dataset:
        """Sets labels by 0-based row (None removes one) and returns the dataset's new version; the version
        named is left as it was."""
        body = {"labels": [{"row": row, "label": label} for row, label in sorted(labels.items())]}
        return Dataset.from_api(self._request("POST", f"/v1/datasets/{dataset_id}/labels", json=body).json())

    def suggest_labels(
        self, dataset_id: str, model_id: str, n: int = 50, timeout: float | None = 600, poll_seconds: float = 1.0
    ) -> dict[str, Any]:
        """The n unlabelled rows most worth labelling for a classifier fine-tuned from model_id: waits while a
        worker chooses them and returns the suggestion ({status, method, classes, rows: [{row, text, uncertainty,
        predicted}]}), failed ones included (see "status" and "error"). WaitTimeout-free: past `timeout` the
        suggestion is returned as it stands (queued or running)."""
        route = f"/v1/datasets/{dataset_id}/suggest-labels"
        suggestion = self._request("POST", route, params={"n": n}, json={"model_id": model_id}).json()
        deadline = None if timeout is None else time.monotonic() + timeout
        while suggestion["status"] in ("queued", "running"):
            if deadline is not None and time.monotonic() >= deadline:
                return suggestion
            time.sleep(poll_seconds)
            suggestion = self._request("GET", f"{route}/{suggestion['id']}").json()
        return suggestion

    # Sites

    def register_site_dataset(
        self, site: str, *, name: str, filename: str, sha256: str, num_rows: int, num_labelled: int,
        columns: list[str] | tuple[str, ...], size_bytes: int, idempotency_key: str | None = None,
    ) -> Dataset:
        """Registers a dataset held by `site`: its metadata only, the rows stay there. `compresso site
        add-dataset` on the site's host checks the file, places it and calls this."""
        body = {"name": name, "filename": filename, "sha256": sha256, "num_rows": num_rows,
                "num_labelled": num_labelled, "columns": list(columns), "size_bytes": size_bytes}
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        response = self._request("POST", f"/v1/sites/{site}/datasets", json=body, headers=headers)
        return Dataset.from_api(response.json())

    def sites(self) -> list[Site]:
        """The sites that hold the tenant's datasets, with their dataset counts and whether a worker serves each."""
        return [Site.from_api(item) for item in self._request("GET", "/v1/sites").json()]

    # Jobs

    def presets(self) -> list[dict[str, Any]]:
        """The named recipes a job may ask for with `preset=`: name, summary and the full recipe."""
        return self._request("GET", "/v1/recipes/presets").json()

    def submit(
        self,
        model_id: str,
        recipe: dict[str, Any] | PathLike | None = None,
        *,
        preset: str | None = None,
        goal: dict[str, Any] | PathLike | None = None,
        dataset_id: str | None = None,
        name: str | None = None,
        device: str = "auto",
        evaluation: dict[str, Any] | None = None,
        deployment: dict[str, Any] | None = None,
        webhook_url: str | None = None,
        mlflow: dict[str, Any] | None = None,
        time_limits: dict[str, float] | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Queues a job. `recipe` is {"steps": [...]} or a .yaml/.yml/.json file holding it; or name a
        `preset` (see `presets()`), or give a `goal` ({min_fidelity, objective, budget_minutes, ...} or a
        file holding it: the job searches for the recipe) instead. `webhook_url`
        gets a signed POST on each state change; `mlflow` ({tracking_uri?, experiment_name?,
        registered_model_name?}) logs the finished job as an MLflow run."""
        body: dict[str, Any] = {
            "model_id": model_id, "device": device, "dataset_id": dataset_id, "name": name,
        }
        if recipe is not None:
            body["recipe"] = load_document(recipe, "recipe")
        if preset is not None:
            body["preset"] = preset
        if goal is not None:
            body["goal"] = load_document(goal, "goal")
        if evaluation is not None:
            body["evaluation"] = evaluation
        if deployment is not None:
            body["deployment"] = deployment
        if webhook_url is not None:
            body["webhook_url"] = webhook_url
        if mlflow is not None:
            body["mlflow"] = mlflow
        if time_limits is not None:
            body["time_limits"] = time_limits  # {"soft_seconds": ..., "hard_seconds": ...}
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        return Job.from_api(self._request("POST", "/v1/jobs", json=body, headers=headers).json())

    def jobs(self, status: str | None = None, created_since: datetime | str | None = None) -> Iterator[Job]:
        """Every job, newest first, following the pages; optionally only those in `status`."""
        return (Job.from_api(item) for item in self._pages("/v1/jobs", status=status, created_since=created_since))

    def job(self, job_id: str) -> Job:
        return Job.from_api(self._request("GET", f"/v1/jobs/{job_id}").json())

    def wait(
        self, job_id: str, timeout: float | None = None, poll_seconds: float = 1.0,
        on_progress: Callable[[Job], None] | None = None,
    ) -> Job:
        """Polls until the job has finished and returns it when it succeeded. Raises JobFailed when it failed,
        was cancelled or timed out, WaitTimeout when it is still going after `timeout` seconds (the job goes on)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if on_progress is not None:
                on_progress(job)
            if job.status == "succeeded":
                return job
            if job.finished:
                raise JobFailed(job)
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeout(job, timeout)
                time.sleep(min(poll_seconds, left))
            else:
                time.sleep(poll_seconds)

    def cancel(self, job_id: str) -> Job:
        """A queued job never starts; a running one stops within seconds. Conflict when it has finished."""
        return Job.from_api(self._request("POST", f"/v1/jobs/{job_id}/cancel").json())

    def report(self, job_id: str) -> dict[str, Any]:
        """The measured report of a succeeded job (Conflict before then)."""
        return self._request("GET", f"/v1/jobs/{job_id}/report").json()

    def logs(self, job_id: str, after: int = 0) -> list[dict[str, Any]]:
        """The job's log lines with an id above `after`, oldest first: {id, attempt, source, message, created_at}."""
        lines: list[dict[str, Any]] = []
        while True:
            params = {"after": after, "limit": _LOG_PAGE}
            page = self._request("GET", f"/v1/jobs/{job_id}/logs", params=params).json()
            lines.extend(page["lines"])
            if len(page["lines"]) < _LOG_PAGE:
                return lines
            after = page["next_after"]

    def download(
        self, job_id: str, dest: PathLike, kind: str = "model", on_progress: ByteProgress | None = None
    ) -> Path:
        """Downloads the job's `kind` artifact ("model": model.zip, "report": report.json) to `dest` (a file,
        or a folder to put it in under its own name) and returns the path. The bytes are checked against
        the sha256 the server sends; they go to a temporary name first, so a failed download leaves nothing."""
        job = self.job(job_id)
        artifact = job.artifact(kind)
        if artifact is None:
            raise ValueError(f"Job {job_id} has no {kind!r} artifact (it is {job.status}); a succeeded job has one.")
        dest = Path(dest)
        target = dest / artifact.filename if dest.is_dir() else dest
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
        response = self._request("GET", f"/v1/artifacts/{artifact.id}", stream=True)
        try:
            expected = response.headers.get("X-Content-SHA256", artifact.sha256).lower()
            total = int(response.headers.get("Content-Length", artifact.size_bytes))
            digest, written = self._write_stream(response, partial, total, on_progress)
            if written != total:
                raise ConnectionFailed(f"The download of {artifact.filename} ended after {written} of {total} bytes.")
            if digest != expected:
                raise ChecksumMismatch(f"{artifact.filename} hashes to {digest}, but the server announced {expected}.")
            os.replace(partial, target)
        finally:
            response.close()
            partial.unlink(missing_ok=True)
        return target

    # HTTP

    @staticmethod
    def _write_stream(
        response: httpx.Response, dest: Path, total: int, on_progress: ByteProgress | None
    ) -> tuple[str, int]:
        sha256, written = hashlib.sha256(), 0
        try:
            with dest.open("wb") as handle:
                for chunk in response.iter_bytes(_CHUNK):
                    handle.write(chunk)
                    sha256.update(chunk)
                    written += len(chunk)
                    if on_progress is not None:
                        on_progress(written, total)
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"The download broke off after {written} of {total} bytes: {exc}") from exc
        return sha256.hexdigest(), written

    def _upload(
        self, route: str, path: Path, name: str, idempotency_key: str | None, on_progress: ByteProgress | None
    ) -> dict[str, Any]:
        total = path.stat().st_size  # also says clearly when the file is missing
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        with path.open("rb") as handle:
            source = handle if on_progress is None else ProgressReader(handle, total, on_progress)
            files = {"file": (path.name, source, "application/octet-stream")}
            return self._request("POST", route, files=files, data={"name": name}, headers=headers).json()

    def _pages(self, route: str, **filters: Any) -> Iterator[dict[str, Any]]:
        params = {key: value.isoformat() if isinstance(value, datetime) else value
                  for key, value in filters.items() if value is not None}
        while True:
            page = self._request("GET", route, params=params).json()
            yield from page["items"]
            if not page.get("next_cursor"):
                return
            params["cursor"] = page["next_cursor"]

    def _request(self, method: str, path: str, *, stream: bool = False, **kwargs: Any) -> httpx.Response:
        """Sends the request, retrying transient failures; returns a success or raises CompressoError.

        Every request retried here is safe to repeat: reads, deletes, cancels, and creations that carry an
        Idempotency-Key (the server replays the first answer for a key it has seen)."""
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self._http.send(self._http.build_request(method, path, **kwargs), stream=stream)
            except httpx.TransportError as exc:
                if last or not isinstance(exc, _RETRIED_ERRORS):
                    raise ConnectionFailed(f"{method} {self.url}{path} failed: {exc or type(exc).__name__}") from exc
                delay = RETRY_BACKOFF_SECONDS * 2**attempt
            else:
                if response.is_success:
                    return response
                delay = None if last else _retry_delay(response, attempt)
                if stream:
                    response.read()
                if delay is None:
                    raise error_from_response(response)
                response.close()
            time.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")


def _retry_delay(response: httpx.Response, attempt: int) -> float | None:
    """Seconds to wait before trying again, or None when this answer is final."""
    if response.status_code not in RETRY_STATUSES:
        return None
    backoff = RETRY_BACKOFF_SECONDS * 2**attempt
    retry_after = response.headers.get("Retry-After")
    if retry_after is None:
        return None if response.status_code == 429 else backoff
    try:
        seconds = float(retry_after)
    except ValueError:
        return backoff  # an HTTP date: rare enough that the usual backoff will do
    return None if seconds > MAX_RETRY_AFTER_SECONDS else max(seconds, 0.0)
