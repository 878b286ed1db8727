"""Many jobs through the distributed setup while workers die: two API processes behind one port, three
workers with separate data dirs, Postgres, Redis and an S3-compatible bucket (moto's server process). Jobs
on a tiny model are submitted as fast as they are accepted (the tenant's concurrent-job limit is raised to
let them all queue) while one worker is SIGKILLed and restarted every
`--kill-every` seconds. Every job must finish exactly once: succeeded, one model.zip and one report.json in
the bucket, one energy row per stage, one "succeeded" log line; none lost, none duplicated. Prints a table
and writes benchmarks/results/scale.json.

    .venv/bin/python benchmarks/scale.py [--jobs 1000] [--kill-every 30] [--timeout 3600]

The workers and the API share this machine's cores, so the throughput is this machine's, not a cluster's.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.archives import zip_folder  # noqa: E402
from tests.conftest import create_database, drop_database, postgres_url  # noqa: E402
from tests.factories import build_tiny_model  # noqa: E402
from tests.integration import harness  # noqa: E402
from tests.s3_server import AWS_ENV, s3_server  # noqa: E402

RESULTS_PATH = REPO_ROOT / "benchmarks" / "results" / "scale.json"
BUCKET = "compresso-scale"
REDIS_URL = "redis://127.0.0.1:6379/13"
RECIPE = {"steps": [{"technique": "quantize", "params": {"scheme": "int8_dynamic"}}]}
# The smallest honest job: every stage runs (load, evaluate, quantize, package, evaluate the result, energy).
EVALUATION = {"max_samples": 8, "sequence_length": 32, "latency_warmup": 1, "latency_repeats": 2,
              "latency_batch_sizes": [1], "energy_repeats": 2, "energy_inferences_per_run": 8}
FINISHED = ("succeeded", "failed", "cancelled", "timed_out")
# A killed worker's job is noticed in seconds, so that the run measures recovery rather than waiting.
SETTINGS = {"COMPRESSO_HEARTBEAT_STALE_SECONDS": "10", "COMPRESSO_RECONCILE_SECONDS": "2",
            "COMPRESSO_RECONCILE_GRACE_SECONDS": "5", "COMPRESSO_MAX_ATTEMPTS": "5", "COMPRESSO_API_WORKERS": "2",
            "COMPRESSO_ACCESS_LOG": "false"}


class Workers:
    """Three `compresso worker` processes, each with its own data dir; `kill_one` SIGKILLs one and starts it again."""

    def __init__(self, env: dict, root: Path, logs: Path, count: int):
        self.env, self.root, self.logs = env, root, logs
        self.processes: list[subprocess.Popen] = [self._start(index) for index in range(count)]
        self.kills = 0
        self.lock = threading.Lock()

    def _start(self, index: int) -> subprocess.Popen:
        env = {**self.env, "COMPRESSO_DATA_DIR": str(self.root / f"worker-{index}")}
        return harness.start(harness.compresso("worker", "--queues", "cpu"), env,
                             self.logs / f"worker-{index}-{time.monotonic_ns()}.log")

    def kill_one(self) -> None:
        with self.lock:
            index = self.kills % len(self.processes)
            process = self.processes[index]
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            self.processes[index] = self._start(index)
            self.kills += 1

    def stop(self) -> None:
        with self.lock:
            for process in self.processes:
                harness.stop(process)


def killer(workers: Workers, every: float, done: threading.Event) -> None:
    while not done.wait(every):
        workers.kill_one()


def submit_all(base_url: str, model_id: str, count: int, threads: int) -> tuple[list[str], float, Counter]:
    """Submits `count` jobs from `threads` clients as fast as they are accepted; retries a 503 (pool busy)."""
    refused: Counter = Counter()

    def submit(_: int) -> str:
        with httpx.Client(base_url=base_url, timeout=60) as client:
            while True:
                response = client.post("/v1/jobs", json={"model_id": model_id, "recipe": RECIPE, "device": "cpu",
                                                         "evaluation": EVALUATION})
                if response.status_code == 202:
                    return response.json()["id"]
                refused[response.status_code] += 1
                time.sleep(float(response.headers.get("retry-after", "1")))

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        ids = list(pool.map(submit, range(count)))
    return ids, time.perf_counter() - started, refused


def sql(database_url: str, query: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(database_url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as db:
        return db.execute(query).fetchall()


def wait_finished(database_url: str, total: int, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = sql(database_url, f"SELECT count(*) FROM jobs WHERE status IN {FINISHED}")[0][0]
        print(f"  {done}/{total} finished", file=sys.stderr)
        if done >= total:
            return time.monotonic()
        time.sleep(10)
    return time.monotonic()


def check(database_url: str, ids: list[str], keys: list[str]) -> dict:
    """Exactly once: per job, its status, artifacts, objects, energy rows and succeeded log lines."""
    statuses = Counter(dict(sql(database_url, "SELECT status, count(*) FROM jobs GROUP BY status")))
    attempts = Counter(dict(sql(database_url, "SELECT attempts, count(*) FROM jobs GROUP BY attempts")))
    artifacts = Counter()
    for _job, count in sql(database_url, "SELECT job_id, count(*) FROM artifacts GROUP BY job_id"):
        artifacts[count] += 1
    energy_doubles = sql(database_url, "SELECT count(*) FROM (SELECT job_id, stage FROM energy_records "
                                       "GROUP BY job_id, stage HAVING count(*) > 1) AS doubles")[0][0]
    succeeded_lines = Counter(dict(sql(database_url,
        "SELECT n, count(*) FROM (SELECT j.id, count(l.id) AS n FROM jobs j LEFT JOIN job_log_lines l ON l.job_id = j.id "
        "AND l.message = 'succeeded: the model and report are stored' GROUP BY j.id) AS per_job GROUP BY n")))
    objects: dict[str, set[str]] = {}
    stray = []
    for key in keys:
        parts = key.split("/")
        if len(parts) >= 3 and parts[1] == "jobs":
            objects.setdefault(parts[2], set()).add("/".join(parts[3:]))
        elif len(parts) >= 2 and parts[1] == "checkpoints":
            stray.append(key)
    complete = sum(1 for job_id in ids if objects.get(job_id) == {"model.zip", "report.json"})
    unfinished = sql(database_url, f"SELECT count(*) FROM jobs WHERE status NOT IN {FINISHED}")[0][0]
    unexpected = sorted(job_id for job_id, names in objects.items() if names != {"model.zip", "report.json"})
    return {
        "submitted": len(ids), "distinct_ids": len(set(ids)), "unfinished_at_timeout": unfinished,
        "statuses": dict(statuses),
        "attempts": {str(key): value for key, value in sorted(attempts.items())},
        "jobs_by_artifact_count": {str(key): value for key, value in sorted(artifacts.items())},
        "jobs_with_exactly_model_and_report_in_bucket": complete,
        "jobs_with_other_objects": len(unexpected), "leftover_checkpoint_objects": len(stray),
        "energy_stage_rows_doubled": energy_doubles,
        "jobs_by_succeeded_log_lines": {str(key): value for key, value in sorted(succeeded_lines.items())},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--kill-every", type=float, default=30.0)
    parser.add_argument("--submitters", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=3600.0, help="Seconds to wait for every job to finish.")
    args = parser.parse_args()
    # A SIGTERM (a CI runner, `timeout`, kill) unwinds like Ctrl-C, so the API, the workers, moto and the
    # database are stopped and dropped by the finally blocks below instead of outliving the benchmark.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    name = f"compresso_scalejobs_{uuid.uuid4().hex[:8]}"
    root = Path(tempfile.mkdtemp(prefix=f"{name}-"))
    logs = root / "logs"
    logs.mkdir()
    create_database(name)
    database_url = postgres_url(name)
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    try:
        with s3_server(harness.free_port(), logs / "moto.log") as server:
            server.client().create_bucket(Bucket=BUCKET)
            # Every job may queue at once: the tenant's limit (4 by default) would pace the submissions instead.
            env = {**os.environ, **AWS_ENV, **SETTINGS, "COMPRESSO_LIMITS__TENANT_CONCURRENT_JOBS": str(args.jobs + 10),
                   "COMPRESSO_DATABASE_URL": database_url,
                   "COMPRESSO_BROKER_URL": REDIS_URL, "COMPRESSO_STORAGE_URL": f"s3://{BUCKET}/scale",
                   "COMPRESSO_S3_ENDPOINT_URL": server.endpoint_url, "HF_HUB_OFFLINE": "1"}
            migrate = harness.start(harness.compresso("migrate"), {**env, "COMPRESSO_DATA_DIR": str(root / "api")},
                                    logs / "migrate.log")
            assert migrate.wait(120) == 0, (logs / "migrate.log").read_text()
            port = harness.free_port()
            api = harness.start(harness.compresso("api", "--port", str(port)),
                                {**env, "COMPRESSO_DATA_DIR": str(root / "api")}, logs / "api.log")
            workers = Workers(env, root, logs, args.workers)
            done = threading.Event()
            try:
                base_url = f"http://127.0.0.1:{port}"
                harness.wait_ready(base_url, api, logs / "api.log")
                with httpx.Client(base_url=base_url, timeout=60) as client:
                    model_dir = build_tiny_model("encoder", root / "model")
                    model = harness.upload(client, "/v1/models", zip_folder(model_dir, root / "model.zip"), "tiny")
                threading.Thread(target=killer, args=(workers, args.kill_every, done), daemon=True).start()
                started = time.monotonic()
                ids, submit_s, refused = submit_all(base_url, model["id"], args.jobs, args.submitters)
                print(f"submitted {len(ids)} jobs in {submit_s:.1f} s", file=sys.stderr)
                finished_at = wait_finished(database_url, args.jobs, args.timeout)
            finally:
                done.set()
                workers.stop()
                harness.stop(api)
            keys = server.keys(BUCKET)
        result = check(database_url, ids, keys)
    finally:
        drop_database(name)
    wall = finished_at - started
    succeeded = result["statuses"].get("succeeded", 0)
    result.update(
        api_processes=2, workers=args.workers, worker_kills=workers.kills, kill_every_s=args.kill_every,
        submit_s=round(submit_s, 1), submitted_per_s=round(len(ids) / submit_s, 1), refused_while_submitting=dict(refused),
        wall_s=round(wall, 1), succeeded_per_min=round(succeeded / wall * 60, 1), cpu_count=os.cpu_count(),
    )
    RESULTS_PATH.write_text(json.dumps(result, indent=2) + "\n")
    width = max(len(key) for key in result)
    for key, value in result.items():
        print(f"{key:<{width}} | {value}")
    print(f"wrote {RESULTS_PATH.relative_to(REPO_ROOT)}")
    exactly_once = (
        succeeded == args.jobs == result["distinct_ids"]
        and result["jobs_with_exactly_model_and_report_in_bucket"] == args.jobs
        and result["jobs_with_other_objects"] == 0 and result["energy_stage_rows_doubled"] == 0
        and result["jobs_by_succeeded_log_lines"] == {"1": args.jobs}
    )
    print("every job finished exactly once" if exactly_once else "NOT every job finished exactly once")
    return 0 if exactly_once else 1


if __name__ == "__main__":
    sys.exit(main())
