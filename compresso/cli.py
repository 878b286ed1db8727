"""`compresso models|datasets|jobs ...`: the client commands of `compresso`, over the HTTP API.

Each command takes --url ($COMPRESSO_URL, default http://127.0.0.1:8000), --api-key ($COMPRESSO_API_KEY)
and --json (one JSON document on stdout, and no progress bars; an error is {"error": {...problem}}).

Exit codes:
    0  success
    1  the job failed, was cancelled or timed out
    2  the request was refused (4xx: bad input, unknown id, bad key), or a local file is unusable
    3  timed out waiting for the job (it goes on running)
    4  the server could not be reached or answered 5xx, or a download broke off or failed its sha256 check
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from compresso.client import DEFAULT_URL, Client
from compresso.errors import CompressoError, JobFailed, WaitTimeout
from compresso.files import load_document
from compresso.resources import Dataset, Job, Model

CLIENT_COMMANDS = ("models", "datasets", "jobs")
EXIT_OK, EXIT_JOB_FAILED, EXIT_REFUSED, EXIT_TIMEOUT, EXIT_UNREACHABLE = 0, 1, 2, 3, 4
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "timed_out")

Handler = Callable[[Client, argparse.Namespace, "Output"], int]


class Output:
    """Text for people, or exactly one JSON document for programs; progress bars on stderr for people only."""

    def __init__(self, as_json: bool):
        self.as_json = as_json
        self.bars = not as_json and sys.stderr.isatty()

    def emit(self, payload: Any, text: str) -> None:
        print(json.dumps(_plain(payload), indent=2) if self.as_json else text)

    def error(self, message: str, payload: Any = None) -> None:
        print(f"compresso: {message}", file=sys.stderr)
        if self.as_json and payload is not None:
            print(json.dumps(_plain(payload), indent=2))

    def byte_bar(self, description: str) -> tuple[tqdm, Callable[[int, int], None]]:
        bar = tqdm(desc=description, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                   disable=not self.bars)

        def on_progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        return bar, on_progress

    def job_bar(self) -> tuple[tqdm, Callable[[Job], None]]:
        bar = tqdm(total=100, unit="%", bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}", file=sys.stderr,
                   disable=not self.bars)

        def on_progress(job: Job) -> None:
            bar.set_description(job.stage or job.status, refresh=False)
            bar.n = round(job.fraction * 100, 1)
            bar.refresh()

        return bar, on_progress


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, datetime | Path):
        return str(value) if isinstance(value, Path) else value.isoformat()
    return value


def _size(size_bytes: int) -> str:
    size = float(size_bytes)
    for unit in ("B", "KB", "MB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def _model_line(model: Model) -> str:
    return (f"{model.id}  {model.name}  {model.architecture}  {model.num_parameters:,} parameters  "
            f"{_size(model.size_bytes)}")


def _dataset_line(dataset: Dataset) -> str:
    columns = ", ".join(dataset.columns)
    return f"{dataset.id}  {dataset.name}  {dataset.num_rows} rows  ({columns})  {_size(dataset.size_bytes)}"


def _job_line(job: Job) -> str:
    return f"{job.id}  {job.status:9}  {job.fraction:4.0%}  {job.stage or '-'}  {job.name or ''}".rstrip()


def _job_text(job: Job) -> str:
    lines = [
        f"job        {job.id}" + (f"  ({job.name})" if job.name else ""),
        f"status     {job.status}" + ("  (cancel requested)" if job.cancel_requested and not job.finished else ""),
        f"progress   {job.fraction:.0%}  {job.stage or ''}".rstrip(),
        f"model      {job.model_id}" + (f"  dataset {job.dataset_id}" if job.dataset_id else ""),
        f"device     {job.device}  (queue {job.queue}, attempt {job.attempts})",
        f"created    {job.created_at.isoformat()}",
    ]
    lines += [f"step {step.index}     {step.technique}: {step.state}" for step in job.steps]
    if job.error:
        lines.append(f"error      {job.error}")
    lines += [f"artifact   {a.kind}: {a.filename} ({_size(a.size_bytes)})" for a in job.artifacts]
    return "\n".join(lines)


def _mapping(value: str | None, what: str) -> dict[str, Any] | None:
    """A mapping given inline as JSON, or a .yaml/.yml/.json file holding it."""
    if value is None:
        return None
    if value.lstrip().startswith("{"):
        try:
            document = json.loads(value)
        except ValueError as exc:
            raise ValueError(f"--{what} is not valid JSON: {exc}") from exc
        if not isinstance(document, dict):
            raise ValueError(f"--{what} must be a JSON object.")
        return document
    return load_document(value, what)


# Models and datasets


def _upload(kind: str) -> Handler:
    def run(client: Client, args: argparse.Namespace, out: Output) -> int:
        bar, on_progress = out.byte_bar(f"upload {Path(args.path).name}")
        with bar:
            if kind == "model":
                item = client.upload_model(args.path, args.name, on_progress=on_progress)
            else:
                item = client.upload_dataset(args.path, args.name, on_progress=on_progress)
        out.emit(item, _model_line(item) if kind == "model" else _dataset_line(item))
        return EXIT_OK

    return run


def _list(kind: str) -> Handler:
    def run(client: Client, args: argparse.Namespace, out: Output) -> int:
        items = list(client.models() if kind == "model" else client.datasets())
        line = _model_line if kind == "model" else _dataset_line
        out.emit(items, "\n".join(map(line, items)) if items else f"No {kind}s.")
        return EXIT_OK

    return run


def _delete(kind: str) -> Handler:
    def run(client: Client, args: argparse.Namespace, out: Output) -> int:
        client.delete_model(args.id) if kind == "model" else client.delete_dataset(args.id)
        out.emit({"deleted": args.id, "kind": kind}, f"Deleted {kind} {args.id}.")
        return EXIT_OK

    return run


def _datasets_versions(client: Client, args: argparse.Namespace, out: Output) -> int:
    versions = client.dataset_versions(args.id)
    out.emit(versions, "\n".join(f"v{item.version}  {_dataset_line(item)}" for item in versions))
    return EXIT_OK


def _row_labels(pairs: list[str]) -> dict[int, str | None]:
    """ROW=LABEL pairs (ROW= removes the row's label)."""
    labels = {}
    for pair in pairs:
        row, separator, label = pair.partition("=")
        if not separator or not row.strip().isdigit():
            raise ValueError(f"{pair!r}: give ROW=LABEL, with ROW the 0-based row number (ROW= removes a label)")
        labels[int(row)] = label or None
    return labels


def _datasets_label(client: Client, args: argparse.Namespace, out: Output) -> int:
    try:
        labels = _row_labels(args.labels)
    except ValueError as exc:
        out.error(str(exc), {"error": {"detail": str(exc)}})
        return EXIT_REFUSED
    version = client.label_rows(args.id, labels)
    out.emit(version, f"v{version.version}  {_dataset_line(version)}")
    return EXIT_OK


def _datasets_suggest(client: Client, args: argparse.Namespace, out: Output) -> int:
    suggestion = client.suggest_labels(args.id, args.model, n=args.n, timeout=args.timeout)
    if suggestion["status"] != "succeeded":
        out.error(f"the suggestion is {suggestion['status']}: {suggestion.get('error') or 'still waiting for a worker'}",
                  suggestion)
        return EXIT_JOB_FAILED if suggestion["status"] == "failed" else EXIT_TIMEOUT
    lines = [f"{item['row']:>6}  {item.get('predicted') or '-':<12}  {item['text'][:80]}" for item in suggestion["rows"]]
    header = f"   row  {'predicted':<12}  text ({suggestion['method']}: label these, then `datasets label {args.id}`)"
    out.emit(suggestion, "\n".join([header, *lines]))
    return EXIT_OK


# Jobs


def _wait(client: Client, job_id: str, timeout: float | None, out: Output) -> int:
    bar, on_progress = out.job_bar()
    with bar:
        job = client.wait(job_id, timeout=timeout, on_progress=on_progress)
    out.emit(job, _job_text(job))
    return EXIT_OK


def _jobs_submit(client: Client, args: argparse.Namespace, out: Output) -> int:
    job = client.submit(
        args.model, args.recipe, preset=args.preset, goal=_mapping(args.goal, "goal"), dataset_id=args.dataset, name=args.name, device=args.device,
        evaluation=_mapping(args.evaluation, "evaluation"), deployment=_mapping(args.deployment, "deployment"),
        webhook_url=args.webhook_url, mlflow=_mapping(args.mlflow, "mlflow"),
    )
    if args.wait:
        if not out.as_json:
            print(f"Submitted job {job.id}.", file=sys.stderr)
        return _wait(client, job.id, args.timeout, out)
    out.emit(job, _job_line(job))
    return EXIT_OK


def _jobs_list(client: Client, args: argparse.Namespace, out: Output) -> int:
    jobs = list(client.jobs(status=args.status))
    out.emit(jobs, "\n".join(map(_job_line, jobs)) if jobs else "No jobs.")
    return EXIT_OK


def _jobs_show(client: Client, args: argparse.Namespace, out: Output) -> int:
    job = client.job(args.id)
    out.emit(job, _job_text(job))
    return EXIT_OK


def _jobs_watch(client: Client, args: argparse.Namespace, out: Output) -> int:
    return _wait(client, args.id, args.timeout, out)


def _jobs_cancel(client: Client, args: argparse.Namespace, out: Output) -> int:
    job = client.cancel(args.id)
    out.emit(job, f"Job {job.id}: {job.status}" + (" (cancel requested)" if not job.finished else "") + ".")
    return EXIT_OK


def _jobs_download(client: Client, args: argparse.Namespace, out: Output) -> int:
    bar, on_progress = out.byte_bar(f"download {args.kind}")
    with bar:
        path = client.download(args.id, args.output, kind=args.kind, on_progress=on_progress)
    size = path.stat().st_size
    out.emit({"job_id": args.id, "kind": args.kind, "path": str(path), "size_bytes": size},
             f"Downloaded {path} ({_size(size)}); its sha256 matches the server's.")
    return EXIT_OK


def _jobs_report(client: Client, args: argparse.Namespace, out: Output) -> int:
    report = client.report(args.id)
    print(json.dumps(report, indent=2))  # the same JSON either way: the report is a document
    return EXIT_OK


def _jobs_logs(client: Client, args: argparse.Namespace, out: Output) -> int:
    lines = client.logs(args.id)
    text = "\n".join(
        f"{line['created_at']}  {line['source']:6} #{line['attempt']}  {line['message']}" for line in lines
    )
    out.emit(lines, text or "No log lines yet.")
    return EXIT_OK


# Parsers


def common_options() -> argparse.ArgumentParser:
    """--url, --api-key and --json: taken by every client command, and by the server's `compresso site`."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help=f"the server (default: $COMPRESSO_URL, else {DEFAULT_URL})")
    common.add_argument("--api-key", help="the tenant's API key (default: $COMPRESSO_API_KEY)")
    common.add_argument("--json", action="store_true", help="print one JSON document on stdout; no progress bars")
    return common


def add_client_commands(commands: argparse._SubParsersAction) -> None:
    common = common_options()

    def leaf(group: argparse._SubParsersAction, name: str, help_text: str, handler: Handler) -> argparse.ArgumentParser:
        parser = group.add_parser(name, help=help_text, parents=[common])
        parser.set_defaults(client_handler=handler)
        return parser

    for kind, plural, source in (("model", "models", "a model folder, or a .zip/.tar.gz of one"),
                                 ("dataset", "datasets", "a .jsonl or .csv file")):
        group = commands.add_parser(plural, help=f"upload, list and delete {plural} (on a server)").add_subparsers(
            dest=f"{plural}_command", required=True
        )
        upload = leaf(group, "upload", f"upload {source}", _upload(kind))
        upload.add_argument("path", help=source)
        upload.add_argument("--name", help="default: the file or folder name")
        leaf(group, "list", f"list the {plural}", _list(kind))
        leaf(group, "delete", f"delete a {kind}", _delete(kind)).add_argument("id")
        if kind == "dataset":
            leaf(group, "versions", "every version of a dataset, oldest first", _datasets_versions).add_argument("id")
            label = leaf(group, "label", "label rows into the dataset's next version", _datasets_label)
            label.add_argument("id")
            label.add_argument("labels", nargs="+", metavar="ROW=LABEL", help="0-based row and its label; ROW= removes it")
            suggest = leaf(group, "suggest-labels", "the unlabelled rows most worth labelling next", _datasets_suggest)
            suggest.add_argument("id")
            suggest.add_argument("--model", required=True, help="the model a classifier will be fine-tuned from")
            suggest.add_argument("-n", type=int, default=50, help="how many rows (1 to 1,000)")
            suggest.add_argument("--timeout", type=float, default=600, help="give up waiting after this many seconds")

    jobs = commands.add_parser("jobs", help="submit, follow and fetch compression jobs (on a server)").add_subparsers(
        dest="jobs_command", required=True
    )
    submit = leaf(jobs, "submit", "submit a job", _jobs_submit)
    submit.add_argument("--model", required=True, help="the model's id")
    how = submit.add_mutually_exclusive_group(required=True)
    how.add_argument("--recipe", help="a .yaml/.yml/.json file: {steps: [{technique, params}]}")
    how.add_argument("--preset", help="a named recipe (GET /v1/recipes/presets), e.g. int8-lossless")
    how.add_argument(
        "--goal", help='search for the recipe: {"min_fidelity": 0.99, "objective": "smallest", "budget_minutes": 30}, '
        "inline JSON or a .yaml/.json file (GET /v1/recipes/goal)",
    )
    submit.add_argument("--dataset", help="an evaluation dataset's id")
    submit.add_argument("--name", help="a name for the job")
    submit.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    submit.add_argument("--evaluation", help="evaluation settings: inline JSON or a .yaml/.json file")
    submit.add_argument("--deployment", help='{"country": "DEU", "requests_per_day": N}: inline JSON or a file')
    submit.add_argument("--webhook-url", help="gets a signed POST on every state change of the job")
    submit.add_argument(
        "--mlflow", help='{"tracking_uri"?, "experiment_name"?, "registered_model_name"?}: inline JSON or a file'
    )
    submit.add_argument("--wait", action="store_true", help="follow the job until it finishes")
    submit.add_argument("--timeout", type=float, help="with --wait: give up waiting after this many seconds")
    leaf(jobs, "list", "list jobs, newest first", _jobs_list).add_argument("--status", choices=JOB_STATUSES)
    leaf(jobs, "show", "a job's status, progress, error and artifacts", _jobs_show).add_argument("id")
    watch = leaf(jobs, "watch", "follow a job with a progress bar until it finishes", _jobs_watch)
    watch.add_argument("id")
    watch.add_argument("--timeout", type=float, help="give up waiting after this many seconds")
    leaf(jobs, "cancel", "cancel a queued or running job", _jobs_cancel).add_argument("id")
    download = leaf(jobs, "download", "download a succeeded job's model.zip or report.json", _jobs_download)
    download.add_argument("id")
    download.add_argument("--kind", choices=("model", "report"), default="model")
    download.add_argument("-o", "--output", default=".", help="a file, or a folder to save under the server's name")
    leaf(jobs, "report", "print the job's measured report (JSON)", _jobs_report).add_argument("id")
    leaf(jobs, "logs", "print the job's log", _jobs_logs).add_argument("id")


def _problem_text(exc: CompressoError) -> str:
    """The detail, then one line per field to fix."""
    lines = [exc.detail or exc.title]
    for error in exc.errors:
        allowed = error.get("allowed")
        where = ".".join(map(str, error.get("loc", [])))
        hint = f" (allowed: {', '.join(map(str, allowed))})" if allowed else ""
        lines.append(f"  {where}: {error.get('msg')}{hint}")
    return "\n".join(lines)


def run_client_command(args: argparse.Namespace) -> int:
    """Runs a parsed client command and returns its exit code (see the module's docstring)."""
    # `compresso` logs at INFO for the server's commands; a client's output is its own.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    out = Output(args.json)
    try:
        with Client(args.url, args.api_key) as client:
            return args.client_handler(client, args, out)
    except JobFailed as exc:
        out.error(str(exc), exc.job)
        return EXIT_JOB_FAILED
    except WaitTimeout as exc:
        out.error(f"{exc}; it goes on (compresso jobs watch {exc.job.id})", exc.job)
        return EXIT_TIMEOUT
    except CompressoError as exc:
        out.error(_problem_text(exc), {"error": exc.to_dict()})
        refused = exc.status is not None and 400 <= exc.status < 500
        return EXIT_REFUSED if refused else EXIT_UNREACHABLE
    except KeyboardInterrupt:
        print("compresso: interrupted; a submitted job goes on running", file=sys.stderr)
        return 130
    except (OSError, ValueError) as exc:  # a local file missing or unreadable, a recipe that does not parse
        out.error(str(exc), {"error": {"status": None, "title": "Unusable input", "detail": str(exc)}})
        return EXIT_REFUSED


def main(argv: list[str] | None = None) -> int:
    """`python -m compresso ...`: the client commands alone, for a machine without the server installed."""
    parser = argparse.ArgumentParser(prog="compresso", description="compresso's client commands.")
    add_client_commands(parser.add_subparsers(dest="command", required=True))
    return run_client_command(parser.parse_args(argv))
