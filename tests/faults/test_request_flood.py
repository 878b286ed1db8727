"""A flood of concurrent requests against a real API process whose database pool is small: every
request is answered, none waits out the pool timeout.

Two ways the API used to starve its own pool: a request's first query (the tenant lookup) held its
connection while the request waited for a free thread to run the endpoint, whose threads were all
waiting for connections; and an upload held a connection for as long as its body streamed in."""

import asyncio

import httpx
import pytest

from tests.faults.cluster import QUANTIZE, STEADY_EVALUATION, Cluster
from tests.integration import harness

SMALL_POOL = {
    "COMPRESSO_DATABASE_POOL_SIZE": "2",
    "COMPRESSO_DATABASE_MAX_OVERFLOW": "0",
    "COMPRESSO_DATABASE_POOL_TIMEOUT_SECONDS": "5",
}
STATUS_REQUESTS = 300
SLOW_UPLOADS = 3
# Longer than the pool timeout: an upload that held a connection while streaming would starve the rest.
SLOW_UPLOAD_SECONDS = 8
BOUNDARY = "flood-boundary"


@pytest.fixture
def cluster(database, tmp_path):
    made = Cluster(tmp_path, SMALL_POOL)
    try:
        yield made
    finally:
        made.stop_all()


def slow_multipart(name: str, seconds: float):  # noqa: ANN201
    """A dataset upload whose body arrives in pieces over `seconds`, as from a slow network."""
    rows = b"".join(b'{"text": "sentence %d"}\n' % index for index in range(40))
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="name"\r\n\r\n{name}\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="rows.jsonl"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    pieces = [head, *(rows[i : i + 100] for i in range(0, len(rows), 100)), tail]

    async def body():  # noqa: ANN202
        for piece in pieces:
            yield piece
            await asyncio.sleep(seconds / len(pieces))

    return body()


async def flood(base_url: str, job_id: str) -> tuple[list[int], list[int]]:
    limits = httpx.Limits(max_connections=STATUS_REQUESTS + SLOW_UPLOADS)
    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as client:

        async def upload(index: int) -> int:
            response = await client.post(
                "/v1/datasets",
                content=slow_multipart(f"slow-{index}", SLOW_UPLOAD_SECONDS),
                headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
            )
            return response.status_code

        async def status(delay: float) -> int:
            await asyncio.sleep(delay)
            return (await client.get(f"/v1/jobs/{job_id}")).status_code

        uploads = [asyncio.create_task(upload(index)) for index in range(SLOW_UPLOADS)]
        await asyncio.sleep(1)  # the uploads are streaming when the polls arrive
        statuses = await asyncio.gather(*(status(0) for index in range(STATUS_REQUESTS)))
        return list(statuses), list(await asyncio.gather(*uploads))


def test_a_request_flood_with_slow_uploads_is_answered_without_starving_the_pool(cluster, model_archive):
    cluster.start_api()
    with cluster.client() as client:
        model = harness.upload(client, "/v1/models", model_archive, "tiny")
        submitted = client.post("/v1/jobs", json={
            "model_id": model["id"], "recipe": QUANTIZE, "device": "cpu", "evaluation": STEADY_EVALUATION,
        })
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]  # no worker runs: it stays queued, and its status is what is polled

    statuses, uploads = asyncio.run(flood(cluster.base_url, job_id))

    assert uploads == [201] * SLOW_UPLOADS
    refused = {code: statuses.count(code) for code in set(statuses) if code != 200}
    assert refused == {}, f"{sum(refused.values())} of {STATUS_REQUESTS} status requests failed: {refused}"
