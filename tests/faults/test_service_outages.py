"""The broker and the database go away while jobs are queued and running, for real: a private
redis-server is restarted (losing every message, as Redis without persistence does), and the
real Postgres is made unreachable for 30 s by cutting the connections to it. No job is lost, the
API answers 503 with Retry-After meanwhile, and everything recovers by itself."""

import shutil
import subprocess
import time

import pytest
import redis

from tests.conftest import TEST_DATABASE, postgres_url
from tests.faults.cluster import STEADY_EVALUATION, Cluster, job_state, submit, wait_until
from tests.faults.tcp_proxy import TcpProxy
from tests.integration import harness

OUTAGE_SECONDS = 30


class PrivateRedis:
    """A redis-server of the test's own, so that restarting it disturbs nobody else."""

    def __init__(self, log):  # noqa: ANN001
        self.port = harness.free_port()
        self.log = log
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [shutil.which("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
        )
        wait_until(self._answers, timeout=20)

    def _answers(self) -> bool:
        try:
            return redis.Redis(port=self.port).ping()
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(20)

    def restart(self) -> None:
        """Down and up again, empty: every queued message is gone."""
        self.stop()
        self.start()


@pytest.fixture
def private_redis(tmp_path):
    server = PrivateRedis(tmp_path / "redis.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_jobs_survive_a_redis_restart_mid_job_and_while_queued(database, tmp_path, private_redis, model_archive):
    cluster = Cluster(tmp_path, {"COMPRESSO_BROKER_URL": private_redis.url})
    try:
        cluster.start_api()
        cluster.start_worker()
        with cluster.client() as client:
            running = submit(client, model_archive)
            # Behind the first (the worker runs one job at a time); its own length does not matter.
            queued = submit(client, model_archive, evaluation={**STEADY_EVALUATION, "latency_repeats": 2})
            wait_until(lambda: job_state(client, running)["status"] == "running")
            assert job_state(client, queued)["status"] == "queued"
            # At least the queued job's message. The reconciler here runs every second with a 2 s grace,
            # so a message the worker holds but has not claimed yet (a slow first import) may be resent
            # too: a duplicate is a no-op, as the attempts check below shows.
            assert redis.Redis(port=private_redis.port).llen("cpu") >= 1

            private_redis.restart()
            assert redis.Redis(port=private_redis.port).llen("cpu") == 0  # the queued job's message is lost

            canary = submit(client, model_archive, evaluation={**STEADY_EVALUATION, "latency_repeats": 2})
            for job_id in (running, queued, canary):
                job = harness.wait_for_status(client, job_id, harness.FINISHED, timeout=300)
                assert job["status"] == "succeeded", job
            assert job_state(client, running)["attempts"] == 1  # the running job was never interrupted
    finally:
        cluster.stop_all()


def test_a_30_second_database_outage_is_503_then_recovers_by_itself(database, tmp_path, model_archive):
    proxy = TcpProxy("127.0.0.1", 5432).start()
    url = postgres_url(TEST_DATABASE).replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    # A heartbeat gap of the outage's length must not count as a lost worker.
    cluster = Cluster(tmp_path, {"COMPRESSO_DATABASE_URL": url, "COMPRESSO_HEARTBEAT_STALE_SECONDS": "120"})
    try:
        cluster.start_api()
        cluster.start_worker()
        with cluster.client() as client:
            job_id = submit(client, model_archive)
            wait_until(lambda: job_state(client, job_id)["status"] == "running")

            proxy.cut()
            cut_at = time.monotonic()
            down = client.get(f"/v1/jobs/{job_id}")
            assert down.status_code == 503
            assert down.headers["retry-after"] == "5"
            assert down.json()["type"] == "/problems/service-unavailable"
            readiness = client.get("/readyz")
            assert readiness.status_code == 503 and readiness.json()["database"] != "ok"
            assert readiness.json()["broker"] == "ok"
            assert client.post("/v1/jobs", json={"model_id": "x", "recipe": {}}).status_code in (422, 503)
            time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - cut_at)))
            proxy.restore()

            wait_until(lambda: client.get("/readyz").status_code == 200, timeout=60)
            job = harness.wait_for_status(client, job_id, harness.FINISHED, timeout=300)
            assert job["status"] == "succeeded", job
            assert job["attempts"] == 1
            assert {artifact["kind"] for artifact in job["artifacts"]} == {"model", "report"}
    finally:
        cluster.stop_all()
        proxy.cut()
