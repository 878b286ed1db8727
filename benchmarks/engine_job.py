"""One compresso job as its own engine process (`python -m workers.engine run --spec`), exactly as a
worker runs it, and the folder it shipped, unzipped (a .cpz unpacked as `compresso unpack` would)."""

import json
import sys
import zipfile
from pathlib import Path

from benchmarks.machine import run_child
from workers.engine.packing.cpz import unpack_cpz


def run_engine_job(spec: dict, root: Path) -> tuple[Path, dict, float, float]:
    """(the runnable folder: model.onnx or the transformers files, the report, wall seconds, peak RSS MB)."""
    root.mkdir(parents=True, exist_ok=True)
    spec_path = root / "spec.json"
    spec_path.write_text(json.dumps(spec))
    wall, peak = run_child([sys.executable, "-m", "workers.engine", "run", "--spec", str(spec_path)])
    package = root / "package"
    with zipfile.ZipFile(Path(spec["output_dir"]) / "model.zip") as archive:
        archive.extractall(package)
    report = json.loads((package / "report.json").read_text())
    packed = sorted(package.glob("*.cpz"))
    if packed:
        unpack_cpz(packed[0], root / "unpacked")
        return root / "unpacked", report, wall, peak
    return package, report, wall, peak
