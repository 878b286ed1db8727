"""A bounded load on loopback against a `compresso serve` it starts, while a job runs on its worker:
job-status polling at a fixed rate, job submissions and dataset uploads at the same time (an open
loop: each request goes out at its planned time, whatever the others are doing). Then one 1 GiB
model upload, to measure how much the API process's memory grows while it streams.

    .venv/bin/python benchmarks/load.py [--status-rate 200] [--seconds 30] [--upload-gib 1] [--profile DIR]

Prints a table and writes benchmarks/results/load.json. Targets (issue 6): job-status p99 under
50 ms at 200 requests/s; RSS growth under 100 MB during a 1 GB upload. The load generator runs on
the same 2 cores as the API and the worker, so this is the whole machine under load, not the API alone;
the table also gives the CPU share each of them used (over the warm-up and the measured load).
The first seconds of the same load are not measured: they open the client's connections.

The load generator uses aiohttp (the `bench` extra): httpx's async client spent 3.6 ms of CPU per
request on this machine against 0.7 ms for aiohttp, which made the generator, not the API, the
bottleneck at 200 requests/s.
"""

import argparse
import asyncio
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp
import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.machine import cpu_model, memory_mb  # noqa: E402
from benchmarks.upload_memory import write_archive  # noqa: E402
from tests.archives import zip_folder  # noqa: E402
from tests.factories import build_tiny_model  # noqa: E402
from tests.integration import harness  # noqa: E402

RESULTS_PATH = REPO_ROOT / "benchmarks" / "results" / "load.json"
QUANTIZE = {"steps": [{"technique": "quantize", "params": {"scheme": "int8_dynamic"}}]}
# Keeps the worker busy for the whole load phase.
BUSY_EVALUATION = {"max_samples": 16, "sequence_length": 128, "latency_repeats": 10_000, "latency_batch_sizes": [32]}
CHEAP_EVALUATION = {"max_samples": 8, "sequence_length": 32, "latency_repeats": 2, "latency_batch_sizes": [1]}
DATASET = b"".join(json.dumps({"text": f"sentence {i}"}).encode() + b"\n" for i in range(50))


async def open_loop(rate: float, seconds: float, send) -> tuple[list[tuple[float, int, float]], float]:  # noqa: ANN001
    """Sends `rate` requests a second for `seconds`, each at its planned time. Returns (latency s, status,
    planned seconds from the start) of each, and the seconds from the first request to the last answer.

    A request's latency counts from its planned time, not from when the generator got round to
    sending it: a stall of the whole machine that holds back both the generator and the API must
    show in the figures, not hide the requests it delayed (the "coordinated omission" of closed-loop
    load tools). Each request's task is created at its planned time: creating all of them up front
    made the generator's own event loop hundreds of milliseconds late for the first second."""
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.2
    results: list[tuple[float, int, float]] = []

    async def one(planned: float) -> None:
        try:
            status = await send()
        except (aiohttp.ClientError, asyncio.TimeoutError):
            status = 0
        results.append((loop.time() - planned, status, planned - start))

    tasks = []
    for i in range(int(rate * seconds)):
        planned = start + i / rate
        await asyncio.sleep(max(0.0, planned - loop.time()))
        tasks.append(asyncio.create_task(one(planned)))
    await asyncio.gather(*tasks)
    return results, loop.time() - start


def summarise(name: str, rate: float, measured: tuple[list[tuple[float, int, float]], float], ok: int) -> dict:
    results, elapsed = measured
    latencies = sorted(latency * 1000 for latency, status, _planned_at in results if status == ok)
    # "inclusive": percentiles stay within the measured values (the default extrapolates past the max).
    quantiles = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) >= 2 else [float("nan")] * 99
    return {
        "endpoint": name, "target_per_s": rate, "sent": len(results), "ok": len(latencies),
        "errors": len(results) - len(latencies), "achieved_per_s": round(len(latencies) / elapsed, 1),
        "elapsed_s": round(elapsed, 1),
        "p50_ms": round(quantiles[49], 1), "p99_ms": round(quantiles[98], 1),
    }


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of one process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """Children started by any thread of the process (each thread lists its own)."""
    return [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()]


def descendants(pid: int) -> list[int]:
    return [grandchild for child in children(pid) for grandchild in (child, *descendants(child))]


def command_line(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def service_processes(serve_pid: int) -> dict[str, list[int]]:
    """`compresso serve` with its uvicorn worker processes (the API); the job and webhook workers;
    the engine processes running jobs."""
    found: dict[str, list[int]] = {"api": [serve_pid], "workers": [], "engine": []}
    for child in children(serve_pid):
        if "app.cli worker" not in command_line(child):
            found["api"] += [child, *descendants(child)]
            continue
        found["workers"].append(child)
        for descendant in descendants(child):
            found["engine" if "engine_child" in command_line(descendant) else "workers"].append(descendant)
    return found


def start_profilers(pids: list[int], folder: Path, seconds: float) -> list[subprocess.Popen]:
    """py-spy (the `bench` extra) on each API process that runs Python requests; its raw output is
    one line per distinct stack with its sample count, which `summarise_profiles` reads."""
    folder.mkdir(parents=True, exist_ok=True)
    return [
        subprocess.Popen(
            [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "200", "--format", "raw", "--function",
             "--nonblocking", "--output", str(folder / f"api-{pid}.txt")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for pid in pids
    ]


def summarise_profiles(folder: Path, top: int = 25) -> str:
    """The functions that were on the stack in the largest share of samples (inclusive), over all API processes."""
    inclusive: dict[str, int] = {}
    total = 0
    for path in folder.glob("api-*.txt"):
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            total += int(count)
            for frame in set(stack.split(";")):
                inclusive[frame] = inclusive.get(frame, 0) + int(count)
    ranked = sorted(inclusive.items(), key=lambda item: -item[1])[:top]
    return "\n".join(f"{100 * count / max(1, total):5.1f}%  {frame}" for frame, count in ranked)


def machine_cpu_ticks() -> list[int]:
    """user, nice, system, idle, iowait, irq, softirq, steal: the machine's CPU time so far."""
    return [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]


def total_rss_mb(pids: list[int]) -> float:
    return sum(memory_mb(pid, "VmRSS") for pid in pids)


def process_cpu(pids: list[int]) -> dict[int, float]:
    seconds = {}
    for pid in pids:
        try:
            seconds[pid] = cpu_seconds(pid)
        except (FileNotFoundError, ProcessLookupError):  # it ended meanwhile
            pass
    return seconds


async def load_phase(base_url: str, job_id: str, model_id: str, args: argparse.Namespace) -> tuple[list[dict], list[tuple]]:
    """The table's rows, and every measured request as (endpoint, its planned seconds from the start,
    latency ms, HTTP status)."""
    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(base_url=base_url, timeout=timeout, connector=connector) as client:

        async def get_status() -> int:
            async with client.get(f"/v1/jobs/{job_id}") as response:
                await response.read()
                return response.status

        async def submit() -> int:
            body = {"model_id": model_id, "recipe": QUANTIZE, "device": "cpu", "evaluation": CHEAP_EVALUATION}
            async with client.post("/v1/jobs", json=body) as response:
                await response.read()
                return response.status

        async def upload() -> int:
            form = aiohttp.FormData()
            form.add_field("name", "load")
            form.add_field("file", DATASET, filename="rows.jsonl", content_type="application/x-ndjson")
            async with client.post("/v1/datasets", data=form) as response:
                await response.read()
                return response.status

        async def mix(seconds: float) -> tuple:
            return await asyncio.gather(
                open_loop(args.status_rate, seconds, get_status),
                open_loop(args.submit_rate, seconds, submit),
                open_loop(args.upload_rate, seconds, upload),
            )

        # The same mix, unmeasured, opens the client's connections and warms both sides first.
        await mix(args.warmup_seconds)
        status, submitted, uploaded = await mix(args.seconds)
    measured = [("GET /v1/jobs/{id}", args.status_rate, status, 200), ("POST /v1/jobs", args.submit_rate, submitted, 202),
                ("POST /v1/datasets", args.upload_rate, uploaded, 201)]
    timeline = [(name, round(planned_at, 4), round(latency * 1000, 2), code)
                for name, _rate, (results, _elapsed), _ok in measured for latency, code, planned_at in results]
    return [summarise(*row) for row in measured], sorted(timeline, key=lambda request: request[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--status-rate", type=float, default=200)
    parser.add_argument("--submit-rate", type=float, default=2)
    parser.add_argument("--upload-rate", type=float, default=2)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--warmup-seconds", type=float, default=3,
                        help="the same load first, not measured: connections opened, caches and code paths warm")
    parser.add_argument("--upload-gib", type=float, default=1.0)
    parser.add_argument("--api-workers", type=int, default=2, help="COMPRESSO_API_WORKERS of the server")
    parser.add_argument("--access-log", action="store_true", help="keep uvicorn's access log on (COMPRESSO_ACCESS_LOG)")
    parser.add_argument("--timeline", type=Path, help="write every measured request to this CSV file: endpoint, "
                        "its planned seconds from the start, latency ms, HTTP status (when do slow ones cluster?)")
    parser.add_argument("--profile", type=Path, help="sample the API processes with py-spy during the load phase and "
                        "write each one's collapsed stacks (and a per-function summary) to this folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-load-") as scratch_name:
        scratch = Path(scratch_name)
        env = {"COMPRESSO_LIMITS__TENANT_CONCURRENT_JOBS": "100000", "COMPRESSO_API_WORKERS": str(args.api_workers),
               "COMPRESSO_ACCESS_LOG": str(args.access_log).lower()}
        with harness.embedded_server(scratch, env=env) as server, httpx.Client(base_url=server.base_url,
                                                                                timeout=600) as client:
            archive = zip_folder(build_tiny_model("encoder", scratch / "model"), scratch / "model.zip")
            model = harness.upload(client, "/v1/models", archive, "tiny")
            submitted = client.post("/v1/jobs", json={"model_id": model["id"], "recipe": QUANTIZE, "device": "cpu",
                                                      "evaluation": BUSY_EVALUATION})
            if submitted.status_code != 202:
                raise SystemExit(f"the busy job was refused: {submitted.text}")
            job = submitted.json()
            deadline = time.monotonic() + 120
            while client.get(f"/v1/jobs/{job['id']}").json()["status"] != "running":
                if time.monotonic() > deadline:
                    raise SystemExit("the job did not start")
                time.sleep(0.5)
            processes = service_processes(server.process.pid)
            every_pid = [pid for pids in processes.values() for pid in pids]
            before, generator_before, wall_before = process_cpu(every_pid), time.process_time(), time.monotonic()
            ticks_before = machine_cpu_ticks()
            profilers = start_profilers(processes["api"], args.profile, args.warmup_seconds + args.seconds) if args.profile else []
            rows, timeline = asyncio.run(load_phase(server.base_url, job["id"], model["id"], args))
            for profiler in profilers:
                profiler.wait(timeout=60)
            after, wall = process_cpu(list(before)), time.monotonic() - wall_before
            ticks = [later - earlier for earlier, later in zip(ticks_before, machine_cpu_ticks())]
            # On a virtual machine, time the hypervisor gave to others: a share of the CPU nobody here got.
            stolen_percent = round(100 * ticks[7] / max(1, sum(ticks)), 1)

            def cores(pids: list[int]) -> float:
                return round(sum(after[pid] - before[pid] for pid in pids if pid in after) / wall, 2)

            cpu_share = {name: cores(pids) for name, pids in processes.items()}
            cpu_share["load_generator"] = round((time.process_time() - generator_before) / wall, 2)
            api_pids = processes["api"]
            still_running = client.get(f"/v1/jobs/{job['id']}").json()["status"] == "running"

            big = scratch / "big.zip"
            write_archive(big, int(args.upload_gib * 2**30))
            before = total_rss_mb(api_pids)
            samples: list[float] = []
            uploading = threading.Event()
            uploading.set()

            def sample() -> None:  # the API processes' resident memory every 20 ms while the upload runs
                while uploading.is_set():
                    samples.append(total_rss_mb(api_pids))
                    time.sleep(0.02)

            sampler = threading.Thread(target=sample)
            sampler.start()
            started = time.monotonic()
            try:
                uploaded = harness.upload(client, "/v1/models", big, "big")
            finally:
                uploading.clear()
                sampler.join()
            upload = {
                "upload_mb": round(big.stat().st_size / 2**20), "seconds": round(time.monotonic() - started, 1),
                "rss_before_mb": round(before, 1), "rss_max_during_mb": round(max(samples), 1),
                "growth_mb": round(max(samples) - before, 1), "samples": len(samples),
                "num_parameters": uploaded["num_parameters"],
            }

    print(f"On {os.cpu_count()} CPUs ({cpu_model()}).")
    print(f"Load for {args.seconds:g} s (after {args.warmup_seconds:g} s of the same load, not measured) on {args.api_workers} API process(es), access log "
          f"{'on' if args.access_log else 'off'}, while a job ran on the worker (still running at the end: {still_running})")
    print(f"{'endpoint':<20} | {'target/s':>8} | {'sent':>5} | {'ok':>5} | {'errors':>6} | {'ok/s':>6} | "
          f"{'until last s':>12} | {'p50 ms':>7} | {'p99 ms':>7}")
    for row in rows:
        print(f"{row['endpoint']:<20} | {row['target_per_s']:>8g} | {row['sent']:>5} | {row['ok']:>5} | {row['errors']:>6} | "
              f"{row['achieved_per_s']:>6} | {row['elapsed_s']:>12} | {row['p50_ms']:>7} | {row['p99_ms']:>7}")
    print("CPU used during the load, in cores (the machine has 2): " + ", ".join(f"{name} {share}" for name, share in cpu_share.items())
          + f"; stolen by the hypervisor: {stolen_percent}% of the machine's CPU time")
    print(f"\n{upload['upload_mb']} MB model upload in {upload['seconds']} s: API processes' RSS {upload['rss_before_mb']} MB before, "
          f"at most {upload['rss_max_during_mb']} MB during it ({upload['samples']} samples): growth {upload['growth_mb']} MB")
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_PATH.write_text(json.dumps({"cpu": cpu_model(), "seconds": args.seconds, "warmup_seconds": args.warmup_seconds, "api_workers": args.api_workers, "access_log": args.access_log, "job_running_throughout": still_running,
                                        "rows": rows, "cpu_cores_used": cpu_share, "stolen_cpu_percent": stolen_percent, "upload": upload}, indent=2) + "\n")
    print(f"wrote {RESULTS_PATH.relative_to(REPO_ROOT)}")
    if args.timeline:
        with args.timeline.open("w", newline="") as timeline_file:
            writer = csv.writer(timeline_file)
            writer.writerow(["endpoint", "planned_at_s", "latency_ms", "status"])
            writer.writerows(timeline)
        print(f"wrote {len(timeline)} requests to {args.timeline}")
    if args.profile:
        summary = summarise_profiles(args.profile)
        (args.profile / "summary.txt").write_text(summary + "\n")
        print(f"\nAPI processes' samples by function (inclusive), from {args.profile}:\n{summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
