"""The API is SIGKILLed in the middle of an upload: no model row exists, and the next start's sweep
removes the half-written scratch folder and a stored folder whose row never committed."""

import os
import socket
import time

from app.config import get_settings
from tests.faults.cluster import Cluster, kill, wait_until

BOUNDARY = "compressoTestBoundary"


def start_a_slow_upload(port: int, declared_bytes: int, sent_bytes: int) -> socket.socket:
    """Sends the request line, the headers and the start of the file part, then stops sending."""
    head = (
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\ncrash-me\r\n"
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"model.zip\"\r\n"
        "Content-Type: application/zip\r\n\r\n"
    ).encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    connection = socket.create_connection(("127.0.0.1", port))
    connection.sendall(
        b"POST /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n".encode()
        + f"Content-Length: {len(head) + declared_bytes + len(tail)}\r\n\r\n".encode()
        + head + os.urandom(sent_bytes)
    )
    return connection


def scratch_bytes(root) -> int:  # noqa: ANN001
    return sum(p.stat().st_size for p in (root / ".scratch").rglob("*") if p.is_file())


def test_an_api_killed_mid_upload_leaves_nothing_after_the_next_start(database, tmp_path):
    storage = get_settings().storage_dir
    cluster = Cluster(tmp_path, {"COMPRESSO_ORPHAN_IDLE_SECONDS": "1"})
    try:
        api = cluster.start_api()
        before = set((storage / ".scratch").iterdir())
        connection = start_a_slow_upload(cluster.port, declared_bytes=50 << 20, sent_bytes=4 << 20)
        wait_until(lambda: scratch_bytes(storage) > 1 << 20, timeout=30)
        kill(api)
        connection.close()
        orphans = set((storage / ".scratch").iterdir()) - before
        assert orphans  # what a crash leaves: the partial upload
        # And a folder moved into place whose row never committed (a crash between the two).
        unregistered = storage / "models" / ("0" * 32)
        unregistered.mkdir(parents=True, exist_ok=True)
        (unregistered / "config.json").write_text("{}")
        time.sleep(1.5)  # idle for longer than COMPRESSO_ORPHAN_IDLE_SECONDS

        cluster.start_api()
        assert not any(path.exists() for path in orphans)
        assert not unregistered.exists()
        with cluster.client() as client:
            assert "crash-me" not in [model["name"] for model in client.get("/v1/models").json()["items"]]
    finally:
        cluster.stop_all()
