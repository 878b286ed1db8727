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


def print_energy_report(report: dict) -> None:
    """The job's energy per stage, the inference energy before and after, and the payback."""
    energy, inference, payback = report["energy"], report["inference"], report["payback"]
    total, inputs = energy["total"], energy["inputs"]
    print(f"\nEnergy ({energy['method']}; {inputs['cpu_power_source']}; "
          f"RAM {inputs['ram_power_w']} W; {inputs['carbon_intensity_g_per_kwh']} g/kWh, PUE {inputs['pue']})")
    print(f"E_job = {total['energy_kwh']:.3e} kWh = {total['co2e_g']:.3f} gCO2e over {total['duration_s']:.1f} s tracked")
    for stage in energy["stages"]:
        print(f"  {stage['stage']:<18} {stage['duration_s']:7.2f} s  {stage['energy_kwh']:.3e} kWh  {stage['co2e_g']:.4f} g")
    print(f"Inference energy per 1000 ({inference['inferences_per_run']} per run, {inference['repeats']} runs, "
          f"batch {inference['batch_size']} x seq {inference['sequence_length']}, {inference['threads']} threads):")
    for side in ("original", "result"):
        figures = inference[side]
        print(f"  {side:<8} {figures['runtime']:<11} mean {figures['kwh_per_1000_mean']:.3e} kWh  "
              f"sd {figures['kwh_per_1000_std']:.1e}  min {figures['kwh_per_1000_min']:.3e}  "
              f"max {figures['kwh_per_1000_max']:.3e}")
    print(f"Payback: {payback['verdict']} (difference {payback['difference_kwh_per_1000']:.3e}, "
          f"noise band {payback['noise_band_kwh_per_1000']:.1e} kWh/1000); N* = {payback['break_even_inferences']}")
    print(f"  {payback['explanation']}")


def print_footprint_report(report: dict) -> None:
    """The job's water and embodied impact, per 1,000 inferences before and after, and their paybacks."""
    water, embodied = report["water"], report["embodied"]
    worker = water["worker"]
    print(f"\nWater (WUE {worker['wue_l_per_kwh']} L/kWh on site; grid {worker['country'] or 'world'} "
          f"{worker['water_intensity_l_per_kwh']:.3g} L/kWh off site): job {water['total']['water_l']:.3e} L "
          f"({water['total']['onsite_l']:.3e} on site, {water['total']['offsite_l']:.3e} off site)")
    for side in ("original", "result"):
        figures = water["inference"][side]
        if figures:
            print(f"  {side:<8} {figures['water_l']:.3e} L per 1000 inferences")
    print(f"  payback: {water['payback']['explanation']}")
    if embodied["method"] != "estimated":
        print(f"Embodied: {embodied['method']} ({embodied['error']})")
        return
    inputs = embodied["inputs"]
    print(f"Embodied ({inputs['tool']} {inputs['tool_version']}, lifetime {inputs['lifetime_hours']:,.0f} h): "
          f"job {embodied['total']['gwp_g']:.3e} g CO2e over {embodied['total']['duration_s']:.1f} s; "
          f"{inputs['per_hour']['gwp_g']:.3g} g CO2e per job-hour")
    for component in inputs["components"]:
        print(f"  {component['description']:<28} share {component['share']:.3g} ({component['share_reason']}): "
              f"{component['per_hour_whole']['gwp_g']:.3g} g CO2e/h whole")
    for side in ("original", "result"):
        figures = embodied["inference"][side]
        if figures:
            print(f"  {side:<8} {figures['gwp_g']:.3e} g CO2e per 1000 inferences ({figures['seconds']:.2f} s)")
    print(f"  payback: {embodied['payback']['explanation']}")
