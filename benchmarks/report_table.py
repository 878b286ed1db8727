"""Prints compresso reports as one before/after table (shared by the benchmark scripts)."""


def report_row(name: str, side: dict, report: dict | None) -> list[str]:
    """One table row for a report side; `report` is None for the original (no ratios, no fidelity)."""
    latency = side["latency"]
    cells = [
        name,
        f"{side['size_bytes'] / 1e6:.1f} MB",
        "1.00x" if report is None else f"{report['ratios']['compression_ratio']:.2f}x",
    ]
    for key in ("batch_1", "batch_32"):
        cells.append(f"{latency[key]['p50_ms']:.1f} / {latency[key]['p95_ms']:.1f}")
        cells.append("-" if report is None else f"{report['ratios']['speedup'][key]:.2f}x")
    metrics = report["fidelity"]["metrics"] if report else None
    cells += ["-", "-"] if metrics is None else [f"{metrics['cosine_mean']:.4f}", f"{metrics['cosine_p5']:.4f}"]
    return cells


def print_table(rows: list[list[str]]) -> None:
    header = ["model", "size", "ratio", "b1 p50/p95 ms", "b1 speedup", "b32 p50/p95 ms", "b32 speedup",
              "cos mean", "cos p5"]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * width for width in widths], *rows]:
        print(" | ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))


def describe_setup(report: dict) -> str:
    return (
        f"all-MiniLM-L6-v2, {report['evaluation']['dataset_source']} sample "
        f"({report['evaluation']['num_samples']} sentences), seq {report['evaluation']['sequence_length']}, "
        f"{report['original']['latency']['threads']} threads, {report['environment']['cpu_count']} CPUs"
    )
