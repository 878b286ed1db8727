"""`compresso keys ...` and `compresso tenants limits` as an operator runs them, and a server that
requires keys refusing to start without one."""

import json
import subprocess

import httpx

from app.tenants.keys import KEY_PATTERN
from tests.integration import harness


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(harness.compresso(*args), capture_output=True, text=True, timeout=120, env=env,
                          cwd=harness.ROOT, check=False)


def test_create_list_revoke_and_use_keys(auth_app):
    created = run("keys", "create", "--tenant", "dave", "--name", "ci pipeline")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert KEY_PATTERN.fullmatch(key), created.stdout
    as_json = run("keys", "create", "--tenant", "dave", "--json", "--expires-in-days", "7")
    second = json.loads(as_json.stdout)
    assert KEY_PATTERN.fullmatch(second["key"]) and second["tenant"] == "dave" and second["expires_at"]

    listed = json.loads(run("keys", "list", "--tenant", "dave", "--json").stdout)
    assert [row["name"] for row in listed] == ["ci pipeline", None]
    assert all(row["state"] == "active" for row in listed)
    assert key not in json.dumps(listed) and second["key"] not in json.dumps(listed)

    headers = {"Authorization": f"Bearer {key}"}
    assert auth_app.get("/v1/jobs", headers=headers).status_code == 200
    revoked = run("keys", "revoke", listed[0]["prefix"])
    assert revoked.returncode == 0 and "Revoked" in revoked.stdout
    assert auth_app.get("/v1/jobs", headers=headers).status_code == 401
    states = {row["prefix"]: row["state"] for row in json.loads(run("keys", "list", "--json").stdout)}
    assert states == {listed[0]["prefix"]: "revoked", second["prefix"]: "active"}

    unknown = run("keys", "revoke", "no-such-key")
    assert unknown.returncode == 2 and "keys list" in unknown.stderr
    assert run("keys", "list", "--tenant", "nobody").returncode == 2


def test_tenant_limits_are_set_and_reset(auth_app):
    run("keys", "create", "--tenant", "erin")
    shown = json.loads(run("tenants", "limits", "erin", "--max-concurrent-jobs", "2", "--json").stdout)
    assert shown == {"tenant": "erin", "max_concurrent_jobs": 2, "max_storage_bytes": None}
    reset = json.loads(run("tenants", "limits", "erin", "--max-concurrent-jobs", "0", "--json").stdout)
    assert reset["max_concurrent_jobs"] is None
    assert run("tenants", "limits", "erin", "--max-storage-bytes", "-5").returncode == 2


def test_a_server_that_requires_keys_refuses_to_start_without_one(tmp_path):
    port = harness.free_port()
    env = harness.embedded_env(tmp_path / "data", port)
    assert run("migrate", env=env).returncode == 0

    public = run("api", "--host", "0.0.0.0", "--port", str(port), env=env)
    assert public.returncode != 0
    assert "listens on 0.0.0.0" in public.stderr and "compresso keys create --tenant NAME" in public.stderr
    required = run("api", "--port", str(port), env={**env, "COMPRESSO_AUTH_REQUIRED": "true"})
    assert required.returncode != 0 and "COMPRESSO_AUTH_REQUIRED is true" in required.stderr
    serve = run("serve", "--host", "0.0.0.0", "--port", str(port), env=env)
    assert serve.returncode != 0 and "no active key" in serve.stderr
    assert harness.processes_using(tmp_path / "data") == []  # no worker was left behind

    key = run("keys", "create", "--tenant", "ops", env=env).stdout.strip().splitlines()[-1]
    log = tmp_path / "api.log"
    process = harness.start(harness.compresso("api", "--port", str(port)), {**env, "COMPRESSO_AUTH_REQUIRED": "true"},
                            log)
    base_url = f"http://127.0.0.1:{port}"
    try:
        harness.wait_ready(base_url, process, log)
        assert httpx.get(f"{base_url}/v1/models").status_code == 401
        assert httpx.get(f"{base_url}/v1/models", headers={"Authorization": f"Bearer {key}"}).json()["items"] == []
    finally:
        harness.stop(process)
