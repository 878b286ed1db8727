"""/readyz answers 503 and names what is unreachable, while /healthz still says the process is up."""

import os

import httpx

from tests.integration import harness


def test_readyz_is_503_when_database_and_broker_are_unreachable(tmp_path):
    port = harness.free_port()
    env = dict(os.environ)
    env["COMPRESSO_DATABASE_URL"] = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"
    env["COMPRESSO_BROKER_URL"] = "redis://127.0.0.1:1/0"
    log = tmp_path / "api.log"
    api = harness.start(harness.compresso("api", "--port", str(port)), env, log)
    base_url = f"http://127.0.0.1:{port}"
    try:
        harness.wait_ready(base_url, api, log, path="/healthz")
        response = httpx.get(f"{base_url}/readyz", timeout=30)
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "unavailable"
        assert body["database"] != "ok"
        assert body["broker"] != "ok"
        listing = httpx.get(f"{base_url}/v1/models", timeout=30)
        assert listing.status_code == 503
        assert listing.headers["retry-after"]
    finally:
        harness.stop(api)
