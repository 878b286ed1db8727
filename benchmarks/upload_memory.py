"""Uploads model archives of growing size to a `compresso serve` it starts, and prints the API
process's peak memory after each: streaming keeps it flat whatever the upload size.

    .venv/bin/python benchmarks/upload_memory.py [--sizes-mb 64 512 2048] [--s3]

With --s3 the server stores into an S3-compatible bucket (a moto server process it starts), so each
upload also goes out as a multipart upload; results go to upload_memory_s3.json. moto keeps objects in
its own memory, which is not counted: the figure is the API process's.

Each archive is a stored (uncompressed) zip of a config.json and one safetensors file of random
bytes, so the server streams, hashes, extracts and inspects the full size. Writes
benchmarks/results/upload_memory.json.
"""

import argparse
import json
import os
import struct
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.machine import memory_mb  # noqa: E402
from tests.integration import harness  # noqa: E402

RESULTS_PATH = REPO_ROOT / "benchmarks" / "results" / "upload_memory.json"
CONFIG = {"architectures": ["BertModel"], "model_type": "bert", "hidden_size": 32}
CHUNK = 8 * 1024 * 1024


def write_archive(path: Path, size_bytes: int) -> None:
    """A zip holding config.json and a valid safetensors file whose one tensor is `size_bytes` of noise."""
    header = json.dumps({"w": {"dtype": "U8", "shape": [size_bytes], "data_offsets": [0, size_bytes]}}).encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        archive.writestr("model/config.json", json.dumps(CONFIG))
        with archive.open("model/model.safetensors", "w", force_zip64=True) as member:
            member.write(struct.pack("<Q", len(header)) + header)
            left = size_bytes
            while left:
                member.write(os.urandom(min(CHUNK, left)))
                left -= min(CHUNK, left)


@contextmanager
def storage_env(scratch: Path, s3: bool) -> Iterator[dict[str, str]]:
    """The server's storage settings: its data dir (default), or a bucket on a moto server."""
    if not s3:
        yield {}
        return
    from tests.s3_server import AWS_ENV, s3_server

    with s3_server(harness.free_port(), scratch / "moto.log") as server:
        server.client().create_bucket(Bucket="bench")
        yield {**AWS_ENV, "COMPRESSO_STORAGE_URL": "s3://bench/compresso", "COMPRESSO_S3_ENDPOINT_URL": server.endpoint_url}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mb", type=int, nargs="+", default=[64, 512, 2048])
    parser.add_argument("--s3", action="store_true", help="store into an S3-compatible bucket (moto)")
    args = parser.parse_args()
    rows = []
    results_path = RESULTS_PATH.with_name("upload_memory_s3.json") if args.s3 else RESULTS_PATH
    with tempfile.TemporaryDirectory(prefix="bench-upload-") as scratch_name:
        scratch = Path(scratch_name)
        with storage_env(scratch, args.s3) as env, harness.embedded_server(scratch, env=env) as server:
            with httpx.Client(base_url=server.base_url, timeout=600) as client:
                client.get("/v1/models")
                rows.append({"upload_mb": 0, "status": "-", "seconds": 0.0, "api_peak_rss_mb": round(memory_mb(server.process.pid, "VmHWM"), 1)})
                for size_mb in sorted(args.sizes_mb):
                    archive = scratch / f"model-{size_mb}.zip"
                    write_archive(archive, size_mb * 1024 * 1024)
                    started = time.monotonic()
                    model = harness.upload(client, "/v1/models", archive, f"{size_mb} MB")
                    seconds = time.monotonic() - started
                    rows.append({
                        "upload_mb": round(archive.stat().st_size / 2**20), "status": 201, "seconds": round(seconds, 1),
                        "api_peak_rss_mb": round(memory_mb(server.process.pid, "VmHWM"), 1), "num_parameters": model["num_parameters"],
                    })
                    client.delete(f"/v1/models/{model['id']}")
                    archive.unlink()
    print(f"API process (compresso serve) peak RSS after each upload ({'S3 bucket' if args.s3 else 'local directory'})")
    print(f"{'upload MB':>10} | {'status':>6} | {'seconds':>7} | {'MB/s':>6} | {'peak RSS MB':>11}")
    for row in rows:
        rate = row["upload_mb"] / row["seconds"] if row["seconds"] else 0
        print(f"{row['upload_mb']:>10} | {row['status']:>6} | {row['seconds']:>7} | {rate:>6.0f} | {row['api_peak_rss_mb']:>11}")
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps({"storage": "s3" if args.s3 else "local", "rows": rows}, indent=2) + "\n")
    print(f"wrote {results_path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
