"""The `compresso` command: serve (embedded default), api, worker, migrate, unpack (a .cpz into a runnable
folder), keys/tenants administration, and site add-dataset (app.sites.cli, on a site's host); models,
datasets and jobs are the client commands of compresso.cli, which talk to a server over HTTP."""

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from app.admin_cli import add_admin_commands, run_admin_command
from app.config import Settings, get_settings
from app.sites.cli import SITE_COMMAND, add_site_commands, site_name
from compresso.cli import CLIENT_COMMANDS, add_client_commands, run_client_command

ROOT = Path(__file__).resolve().parents[1]
WORKER_STOP_SECONDS = 30

logger = logging.getLogger("compresso")


def alembic_config():  # noqa: ANN201
    from alembic.config import Config

    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    return config


def migrate() -> None:
    from alembic import command

    settings = get_settings()
    if settings.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    config = alembic_config()
    config.attributes["configure_logging"] = False  # keep the logging set up by main()
    command.upgrade(config, "head")


def openapi_document() -> str:
    """The document as committed in docs/openapi.json: sorted keys, so a diff shows real changes."""
    import json

    from app.main import create_app

    return json.dumps(create_app().openapi(), indent=2, sort_keys=True) + "\n"


def check_auth_ready(host: str) -> None:
    """A server that requires keys but has none would lock everyone out: refuse to start, and say why."""
    from app.db.base import utcnow
    from app.db.session import session_scope
    from app.tenants import repository

    settings = get_settings()
    if not settings.auth_enabled:
        return
    with session_scope() as session:
        usable = repository.count_usable_keys(session, utcnow())
    if usable == 0:
        why = "COMPRESSO_AUTH_REQUIRED is true" if settings.auth_required else f"it listens on {host}, not loopback"
        raise SystemExit(
            f"compresso requires API keys because {why}, and no active key exists. "
            "Create one first: compresso keys create --tenant NAME"
        )


def run_api(host: str, port: int) -> None:
    import uvicorn

    # The app decides whether requests need a key from the address it really listens on.
    os.environ["COMPRESSO_HOST"] = host
    get_settings.cache_clear()
    check_auth_ready(host)
    settings = get_settings()
    uvicorn.run(
        "app.main:create_app", factory=True, host=host, port=port, log_level="info",
        workers=settings.api_workers, access_log=settings.access_log,
    )


def load_settings() -> Settings:
    """The settings, or an exit that names each bad variable and says what it must be."""
    from pydantic import ValidationError

    try:
        return get_settings()
    except ValidationError as exc:
        problems = [
            f"COMPRESSO_{'__'.join(str(part) for part in error['loc']).upper()}: {error['msg']}"
            + (f" (got {error['input']!r})" if not isinstance(error.get("input"), dict) else "")
            for error in exc.errors()
        ]
        raise SystemExit("compresso: invalid settings:\n  " + "\n  ".join(problems)) from None


def check_worker_settings() -> None:
    """Fails at start, not on the first job, when the grid country is not in the bundled table or the
    storage bucket cannot be reached."""
    from workers.engine.energy.intensity import carbon_intensity
    from workers.engine.errors import EngineUserError

    try:
        carbon_intensity(get_settings().carbon_country)
    except EngineUserError as exc:
        raise SystemExit(f"COMPRESSO_CARBON_COUNTRY: {exc}") from exc
    from app.core.object_storage import StorageConfigError
    from app.core.storage import check_storage

    try:
        check_storage(get_settings())
    except StorageConfigError as exc:
        raise SystemExit(f"COMPRESSO_STORAGE_URL: {exc}") from exc


def worker_queues(queues: str | None, site: str | None) -> str:
    """What `compresso worker` consumes: --queues (default cpu) and, with --site, the site's own queue,
    alone unless --queues names others too. ValueError names a queue no worker may consume."""
    from workers.celery_app import QUEUES
    from workers.engine.federated.config import SITE_NAME, SITE_QUEUE_PREFIX, site_queue

    names = [] if queues is None and site is not None else ("cpu" if queues is None else queues).split(",")
    if site is not None:
        names.append(site_queue(site))
    # site.NAME is accepted in --queues too: a gpu supervisor restarts its workers with the queues resolved.
    unknown = [
        name for name in names
        if name not in QUEUES
        and not (name.startswith(SITE_QUEUE_PREFIX) and SITE_NAME.fullmatch(name.removeprefix(SITE_QUEUE_PREFIX)))
    ]
    if unknown:
        raise ValueError(f"unknown queue(s) {', '.join(sorted(unknown))}; allowed: {', '.join(QUEUES)} (and a site's "
                         "queue, with --site NAME)")
    return ",".join(dict.fromkeys(names))


def run_worker(queues: str, concurrency: int) -> None:
    from workers import hardware
    from workers.celery_app import WEBHOOK_QUEUE, celery_app
    from workers.parent_death import die_with_parent

    # Started by `serve` or a gpu supervisor: a warm shutdown (the job goes back on the queue) when
    # that parent dies, however it dies. A worker started on its own names no parent and is left be.
    die_with_parent(signal.SIGTERM)
    check_worker_settings()
    os.environ["COMPRESSO_WORKER_QUEUES"] = queues  # for its heartbeat row (workers.node_heartbeat)
    options = []
    if "gpu" in queues.split(","):
        device = _pin_gpu_workers(queues)
        if device is None:
            return  # this process supervised one worker per GPU until they stopped
        concurrency = 1
        options = ["--hostname", f"gpu{device}@%h"]
    os.environ[hardware.JOBS_AT_ONCE] = str(concurrency)
    if set(queues.split(",")) - {WEBHOOK_QUEUE}:
        # Boavizta takes a second or two: it runs while Celery starts; the first job waits for it if need be.
        hardware.start_probe(get_settings())
    # Threads, not processes: each job runs the engine in a child process of its own, so the
    # worker only supervises, and a shutdown signal reaches the supervising threads directly.
    celery_app.worker_main(
        ["worker", "--queues", queues, "--pool", "threads", "--concurrency", str(concurrency), "--loglevel", "INFO",
         *options]
    )


def _pin_gpu_workers(queues: str) -> str | None:
    """A gpu worker runs one job per GPU. With several GPUs, this process starts one pinned worker
    per GPU and supervises them (returns None once they stop); with one, it pins itself to it, reads
    its idle power, and returns the device."""
    from workers import gpus, hardware

    device = os.environ.get(gpus.PINNED_GPU)
    if device is None:
        plan = gpus.worker_plan(gpus.gpu_count(), os.environ.get("CUDA_VISIBLE_DEVICES"))
        if not plan:
            raise SystemExit(
                "compresso worker --queues gpu: no GPU is visible here (NVML found none); run a cpu worker, "
                "or check the driver and CUDA_VISIBLE_DEVICES."
            )
        if len(plan) > 1:
            _supervise(
                [EmbeddedWorker(queues, env={
                    **gpus.DEVICE_ORDER, "CUDA_VISIBLE_DEVICES": gpu, gpus.PINNED_GPU: gpu,
                    hardware.GPU_WORKERS_ON_HOST: str(len(plan)),
                }) for gpu in plan]
            )
            return None
        device = plan[0]
    os.environ.update({**gpus.DEVICE_ORDER, "CUDA_VISIBLE_DEVICES": device, gpus.PINNED_GPU: device})
    if get_settings().gpu_idle_watts is None:
        measured = gpus.idle_watts(device)
        if measured is not None:
            os.environ["COMPRESSO_GPU_IDLE_WATTS"], os.environ["COMPRESSO_GPU_IDLE_SOURCE"] = str(measured[0]), measured[1]
            get_settings.cache_clear()
            logger.info("GPU %s idle power: %.1f W (%s)", device, *measured)
    return device


def _supervise(workers: list["EmbeddedWorker"]) -> None:
    """Runs the workers until SIGTERM or SIGINT, then stops them all (each puts its job back)."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: stop.set())
    for worker in workers:
        worker.start()
    stop.wait()
    for worker in workers:
        worker.stop()


# Asked in a child process: importing torch in `serve` itself would keep ~230 MB of it resident in the
# API process for its whole life, which never runs a model (the workers do).
_CUDA_PROBE = "import torch; print(torch.cuda.is_available())"
CUDA_PROBE_SECONDS = 120


def _cuda_available() -> bool:
    try:
        probe = subprocess.run(
            [sys.executable, "-c", _CUDA_PROBE], capture_output=True, text=True, timeout=CUDA_PROBE_SECONDS
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    # A broken CUDA install (a failed import, an exception) means "no GPU", not a crash.
    return probe.returncode == 0 and probe.stdout.strip().endswith("True")


class EmbeddedWorker:
    """The worker process that `serve` runs beside the API, restarted if it dies on its own."""

    def __init__(self, queues: str, concurrency: int = 1, env: dict[str, str] | None = None):
        from workers.parent_death import PARENT_PID

        self.command = [
            sys.executable, "-m", "app.cli", "worker", "--queues", queues, "--concurrency", str(concurrency)
        ]
        # The worker dies with this process (workers.parent_death), even when this one is SIGKILLed.
        self.env = {**os.environ, **(env or {}), PARENT_PID: str(os.getpid())}
        self.process: subprocess.Popen | None = None
        self.stopping = threading.Event()

    def _spawn(self) -> subprocess.Popen:
        # Its own session: Ctrl-C reaches `serve` alone, which then asks the worker to stop exactly once.
        return subprocess.Popen(self.command, start_new_session=True, env=self.env)

    def start(self) -> None:
        self.process = self._spawn()
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        while not self.stopping.is_set():
            code = self.process.wait()
            if self.stopping.is_set():
                return
            logger.error("the worker exited with code %s; restarting it", code)
            self.stopping.wait(2)
            if not self.stopping.is_set():
                self.process = self._spawn()

    def stop(self) -> None:
        self.stopping.set()
        if self.process is None or self.process.poll() is not None:
            return
        # A warm shutdown: a running job is put back on the queue and resumes at the next start.
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(WORKER_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# Deliveries wait on other servers, not on the CPU: several at once, in their own worker process,
# so a running job never holds an event back.
WEBHOOK_WORKER_CONCURRENCY = 4


def serve(host: str, port: int) -> None:
    """Everything on one machine: SQLite, a local artifact directory, a broker on SQLite, a job worker
    and a webhook worker."""
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    gpu = _cuda_available()
    # The worker and the API read the same settings; the resolved data dir keeps them on the same files.
    os.environ["COMPRESSO_DATA_DIR"] = str(settings.data_dir)
    os.environ["COMPRESSO_GPU_ENABLED"] = "true" if gpu else "false"
    os.environ["COMPRESSO_HOST"] = host
    get_settings.cache_clear()
    migrate()
    check_auth_ready(host)  # before the worker starts, so a refusal leaves nothing running
    from workers.celery_app import WEBHOOK_QUEUE

    workers = [
        EmbeddedWorker("cpu,gpu" if gpu else "cpu"),
        EmbeddedWorker(WEBHOOK_QUEUE, concurrency=WEBHOOK_WORKER_CONCURRENCY),
    ]
    for worker in workers:
        worker.start()
    logger.info("compresso is serving on http://%s:%d (data in %s)", host, port, settings.data_dir)
    _stop_like_ctrl_c()
    try:
        run_api(host, port)
    finally:
        for worker in workers:
            worker.stop()


def _stop_like_ctrl_c() -> None:
    """SIGTERM (systemd, `docker stop`, a CI runner) and SIGHUP (a closed terminal) stop `serve` as
    Ctrl-C does: the API shuts down, then the `finally` above stops the workers.

    uvicorn handles SIGTERM during its run, then restores the handler it found and raises the signal
    again: with the default handler the process would die there, before stopping its workers. This
    handler turns it into SystemExit, which unwinds through that `finally`. SIGHUP, which uvicorn does
    not handle, is passed on as SIGTERM so that the API shuts down gracefully first."""
    def exit_now(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, exit_now)
    signal.signal(signal.SIGHUP, lambda *_: signal.raise_signal(signal.SIGTERM))


def unpack(source: Path, out_dir: Path, force: bool) -> int:
    """Exit status 1 with the container's own message (not a traceback) when it cannot be unpacked."""
    from workers.engine.packing.cpz import CpzError, unpack_cpz

    try:
        written = unpack_cpz(source, out_dir, overwrite=force)
    except (CpzError, OSError) as exc:
        print(f"compresso unpack: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(f"{path} ({path.stat().st_size:,} bytes)")
    return 0


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    parser = argparse.ArgumentParser(prog="compresso", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("serve", "run the API and a worker on this machine (SQLite, local files, no external service)"),
        ("api", "run the API only (point COMPRESSO_DATABASE_URL and COMPRESSO_BROKER_URL at shared services)"),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--host", default=settings.host)
        sub.add_argument("--port", type=int, default=settings.port)
    worker = commands.add_parser("worker", help="run a worker consuming the given queues")
    worker.add_argument(
        "--queues", help="comma-separated: cpu, gpu, webhooks (e.g. cpu,gpu); default cpu, or none beside --site"
    )
    worker.add_argument(
        "--site", type=site_name,
        help="a site's worker: consumes the site's queue (site.NAME), where federated steps send the training on "
        "its datasets",
    )
    worker.add_argument("--concurrency", type=int, default=1, help="jobs run at once by this worker")
    commands.add_parser("migrate", help="apply database migrations")
    commands.add_parser("openapi", help="print the OpenAPI document (what /openapi.json serves)")
    unpack_parser = commands.add_parser("unpack", help="restore the runnable model folder from a .cpz file")
    unpack_parser.add_argument("source", type=Path, help="the .cpz file (the huffman step's output)")
    unpack_parser.add_argument("out_dir", type=Path, help="folder to write (created; must be empty)")
    unpack_parser.add_argument("--force", action="store_true", help="write into a non-empty folder, replacing files")
    add_admin_commands(commands)
    add_client_commands(commands)
    add_site_commands(commands)
    args = parser.parse_args(argv)

    if args.command == "serve":
        serve(args.host, args.port)
    elif args.command == "api":
        run_api(args.host, args.port)
    elif args.command == "worker":
        try:
            queues = worker_queues(args.queues, args.site)
        except ValueError as exc:
            parser.error(str(exc))
        run_worker(queues, args.concurrency)
    elif args.command == "migrate":
        migrate()
    elif args.command == "openapi":
        print(openapi_document())
    elif args.command == "unpack":
        raise SystemExit(unpack(args.source, args.out_dir, args.force))
    elif args.command in (*CLIENT_COMMANDS, SITE_COMMAND):
        raise SystemExit(run_client_command(args))
    else:
        run_admin_command(args)


if __name__ == "__main__":
    main()
