"""Latency of the API's busiest reads as rows pile up: `GET /v1/jobs?limit=50`, `GET /v1/jobs/{id}` and the
dashboard overview, at 100 jobs, then at 100,000 jobs with 1,000,000 log lines and 600,000 energy rows,
on a fresh Postgres database and a real `compresso api` process. Target: each p99 at 100,000 rows is
within 2x of its p99 at 100 rows. Writes benchmarks/results/scale_rows.json.

    .venv/bin/python benchmarks/scale_rows.py [--jobs 100 100000] [--requests 300]

Rows are copied inside Postgres from one real job (the MiniLM report of api_quantize_minilm.json, its
energy stages and log lines), so seeding 100,000 jobs takes seconds, not a job run each.
"""

import argparse
import json
import os
import random
import statistics
import sys
import time
import uuid
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.conftest import create_database, drop_database, postgres_url  # noqa: E402
from tests.integration import harness  # noqa: E402

RESULTS_PATH = REPO_ROOT / "benchmarks" / "results" / "scale_rows.json"
REPORT = json.loads((REPO_ROOT / "benchmarks/results/api_quantize_minilm.json").read_text())["report"]
LOG_LINES_PER_JOB = 10
ENDPOINTS = ("GET /v1/jobs?limit=50", "GET /v1/jobs/{id}", "GET / (dashboard overview)")


def seed(database_url: str, total_jobs: int) -> None:
    """Tops the tenant's jobs up to `total_jobs`, each with the report, 6 energy rows and 10 log lines."""
    import psycopg

    from app.jobs.report_figures import report_figures

    figures = report_figures(REPORT)
    with psycopg.connect(database_url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as db:
        have = db.execute("SELECT count(*) FROM jobs").fetchone()[0]
        count = total_jobs - have
        if count <= 0:
            return
        db.execute("INSERT INTO models (id, created_at, tenant_id, name, architecture, model_type, task,"
                   " num_parameters, size_bytes, sha256, storage_key, status) VALUES ('scale-model', now(), 'default', 'm',"
                   " 'BertModel', 'bert', 'feature-extraction', 1, 1, repeat('0', 64), 'models/none', 'ready')"
                   " ON CONFLICT DO NOTHING")
        # Spread over the last year, newest last: lists are newest first, so pages read the new end.
        db.execute(
            "INSERT INTO jobs (id, created_at, tenant_id, model_id, device, queue, target, recipe, evaluation,"
            " deployment, status, progress, attempts, cancel_requested, report, original_size_bytes,"
            " result_size_bytes, saving_kwh_per_day, saving_co2e_g_per_day, finished_at)"
            " SELECT md5(%(salt)s || i::text), now() - (i || ' seconds')::interval * 300, 'default', 'scale-model',"
            " 'cpu', 'cpu', '{\"runtime\": \"onnxruntime\", \"device\": \"cpu\"}', %(recipe)s, '{}', '{}', 'succeeded',"
            " 1.0, 1, false, %(report)s, %(original)s, %(result)s, %(kwh)s, %(co2)s, now()"
            " FROM generate_series(1, %(count)s) AS i",
            {"salt": uuid.uuid4().hex, "recipe": json.dumps(REPORT["job"]["recipe"]), "report": json.dumps(REPORT),
             "original": figures["original_size_bytes"], "result": figures["result_size_bytes"],
             "kwh": figures["saving_kwh_per_day"], "co2": figures["saving_co2e_g_per_day"], "count": count},
        )
        db.execute(
            "INSERT INTO energy_records (id, created_at, job_id, stage, duration_s, cpu_kwh, gpu_kwh, ram_kwh,"
            " energy_kwh, co2e_g, method) SELECT md5(j.id || s.stage), j.created_at, j.id, s.stage, 1.0, 1e-5, 0,"
            " 1e-6, 1.1e-5, 0.005, 'estimated' FROM jobs j LEFT JOIN energy_records e ON e.job_id = j.id"
            " CROSS JOIN (VALUES ('load'), ('evaluate_original'), ('step_1.quantize'), ('package'),"
            " ('evaluate_result'), ('inference_energy')) AS s(stage) WHERE e.id IS NULL"
        )
        db.execute(
            "INSERT INTO job_log_lines (job_id, attempt, source, message, created_at)"
            " SELECT j.id, 1, 'engine', 'step ' || n || ': a line as long as the engine usually writes it', j.created_at"
            " FROM jobs j LEFT JOIN job_log_lines l ON l.job_id = j.id CROSS JOIN generate_series(1, %(lines)s) AS n"
            " WHERE l.id IS NULL",
            {"lines": LOG_LINES_PER_JOB},
        )
        # The running totals the worker keeps as each job succeeds, recounted for the copied jobs.
        db.execute("DELETE FROM tenant_totals")
        db.execute(
            "INSERT INTO tenant_totals SELECT j.tenant_id, count(*), sum(greatest(j.original_size_bytes"
            " - j.result_size_bytes, 0)), sum(e.kwh), sum(e.co2), 0, 0, coalesce(sum(j.saving_kwh_per_day), 0), 0"
            " FROM jobs j JOIN (SELECT job_id, sum(energy_kwh) AS kwh, sum(co2e_g) AS co2 FROM energy_records"
            " GROUP BY job_id) e ON e.job_id = j.id WHERE j.status = 'succeeded' GROUP BY j.tenant_id"
        )
        db.execute("ANALYZE")


def job_ids(database_url: str, sample: int) -> list[str]:
    import psycopg

    with psycopg.connect(database_url.replace("postgresql+psycopg", "postgresql")) as db:
        return [row[0] for row in db.execute("SELECT id FROM jobs ORDER BY random() LIMIT %s", (sample,))]


def overview_total(client: httpx.Client) -> str:
    """The overview's count of compressed models, to show the page read the seeded totals."""
    html = client.get("/").text
    return html.split('id="total-compressed">', 1)[1].split("<", 1)[0]


def measure(client: httpx.Client, ids: list[str], requests: int) -> dict[str, dict[str, float]]:
    paths = {
        ENDPOINTS[0]: lambda: "/v1/jobs?limit=50",
        ENDPOINTS[1]: lambda: f"/v1/jobs/{random.choice(ids)}",
        ENDPOINTS[2]: lambda: "/",
    }
    results = {}
    for name, path in paths.items():
        for _ in range(10):  # warm-up
            client.get(path()).raise_for_status()
        timings = []
        for _ in range(requests):
            started = time.perf_counter()
            client.get(path()).raise_for_status()
            timings.append((time.perf_counter() - started) * 1000)
        timings.sort()
        results[name] = {"p50_ms": statistics.median(timings), "p99_ms": timings[int(len(timings) * 0.99) - 1]}
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[100, 100_000])
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    name = f"compresso_scale_{uuid.uuid4().hex[:8]}"
    create_database(name)
    url = postgres_url(name)
    env = {**os.environ, "COMPRESSO_DATABASE_URL": url, "COMPRESSO_BROKER_URL": "redis://127.0.0.1:6379/14"}
    rows = []
    logs = Path(os.environ.get("TMPDIR", "/tmp")) / f"{name}-logs"
    logs.mkdir(parents=True, exist_ok=True)
    try:
        migrate = harness.start(harness.compresso("migrate"), {**env, "COMPRESSO_DATA_DIR": str(logs / "data")},
                                logs / "migrate.log")
        assert migrate.wait(120) == 0, (logs / "migrate.log").read_text()
        port = harness.free_port()
        api = harness.start(harness.compresso("api", "--port", str(port)),
                            {**env, "COMPRESSO_DATA_DIR": str(logs / "data")}, logs / "api.log")
        try:
            harness.wait_ready(f"http://127.0.0.1:{port}", api, logs / "api.log")
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
                for total in sorted(args.jobs):
                    started = time.perf_counter()
                    seed(url, total)
                    seconds = time.perf_counter() - started
                    print(f"seeded {total:,} jobs in {seconds:.1f} s", file=sys.stderr)
                    rows.append({"jobs": total, "log_lines": total * LOG_LINES_PER_JOB, "energy_rows": total * 6,
                                 "seed_s": round(seconds, 1), "overview_models_compressed": overview_total(client),
                                 **measure(client, job_ids(url, 200), args.requests)})
        finally:
            harness.stop(api)
    finally:
        drop_database(name)

    base, top = rows[0], rows[-1]
    print(f"\n{'endpoint':<28} | " + " | ".join(f"{row['jobs']:>7,} jobs p50 / p99 ms" for row in rows)
          + " | p99 ratio")
    verdicts = {}
    for endpoint in ENDPOINTS:
        ratio = top[endpoint]["p99_ms"] / base[endpoint]["p99_ms"]
        verdicts[endpoint] = ratio
        cells = " | ".join(f"{row[endpoint]['p50_ms']:>12.1f} / {row[endpoint]['p99_ms']:>6.1f}" for row in rows)
        print(f"{endpoint:<28} | {cells} | {ratio:.2f}x")
    RESULTS_PATH.write_text(json.dumps({"target_p99_ratio": 2.0, "rows": rows, "p99_ratio": verdicts}, indent=2) + "\n")
    print(f"wrote {RESULTS_PATH.relative_to(REPO_ROOT)}")
    return 0 if all(ratio <= 2.0 for ratio in verdicts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
