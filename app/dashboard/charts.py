"""The job page's charts, drawn from a job report as plain SVG (no JavaScript), so they work offline.

Each chart is a pure `report -> str | None`, None when the report lacks what the chart needs.
"""

from collections.abc import Callable

from app.dashboard.front_chart import search_front_chart
from app.dashboard.svg import (
    CHAR, PALETTE, SMALL, WIDTH, Bar, Scale, axis, axis_room, bar, bar_panel, clip, data, document, esc,
    fits, fmt, get, legend, line, num, text, tick_text, ticks,
)

SIDES = ("original", "result")
# A white outline behind text keeps it readable where a reference line crosses it.
HALO = ' stroke="#fff" stroke-width="3" paint-order="stroke"'
BOXES = [("original", PALETTE["original"], "box"), ("result", PALETTE["result"], "box")]


def _quality(report: dict) -> tuple[str, float, float] | None:
    """(metric, original, result): accuracy when both sides were labelled, else the fidelity metric,
    for which the original is the reference and scores 1.0 by definition."""
    before = num(get(report, "original", "quality", "accuracy"))
    after = num(get(report, "result", "quality", "accuracy"))
    if before is not None and after is not None:
        return "accuracy", before, after
    metric = get(report, "fidelity", "primary_metric")
    value = num(get(report, "fidelity", "metrics", metric)) if isinstance(metric, str) else None
    return None if value is None else (metric, 1.0, value)


def _q(value: float | None) -> str:
    """Quality figures keep four decimals, so 1.0000 and 0.9923 read as the same precision."""
    return "n/a" if value is None else f"{value:.4f}"


def _mb(size_bytes: object) -> float | None:
    value = num(size_bytes)
    return None if value is None else value / 1e6


def _steps(report: dict) -> list[dict]:
    return [step for step in (get(report, "steps") or []) if isinstance(step, dict)]


def _energy_unit(largest_kwh: float) -> tuple[float, str]:
    """Job and per-inference figures span micro- to kilowatt-hours; pick a unit that keeps ticks short."""
    for factor, unit in ((1.0, "kWh"), (1e3, "Wh")):
        if largest_kwh * factor >= 1:
            return factor, unit
    return 1e6, "mWh"


def size_quality_chart(report: dict) -> str | None:
    """Size (x) against quality (y) for the original and the result. Quality is measured for those
    two only, so intermediate steps sit on the size axis as hollow, numbered markers."""
    quality = _quality(report)
    before, after = _mb(get(report, "original", "size_bytes")), _mb(get(report, "result", "size_bytes"))
    if quality is None or before is None or after is None:
        return None
    metric, q_before, q_after = quality
    between = [(index, str(step.get("technique", "step")), _mb(step.get("size_bytes_after")))
               for index, step in enumerate(_steps(report)[:-1], 1)]
    between = [(index, technique, size) for index, technique, size in between if size is not None]
    items = BOXES + ([("after a step (size only)", PALETTE["axis"], "hollow")] if between else [])
    parts, top = legend(items, 16, 10, WIDTH - 32)
    spread = abs(q_before - q_after) * 0.5  # keeps the points clear of the step markers on the size axis
    y_ticks = ticks([min(q_before, q_after) - spread, max(q_before, q_after) + spread])
    x_ticks = ticks([before * 1.05, after, *(size for _, _, size in between)], zero=True)
    x0, y0, x1, y1 = 16 + axis_room(y_ticks), top + 14, WIDTH - 20, top + 214
    sx, sy = Scale.over(x_ticks, x0, x1), Scale.over(y_ticks, y1, y0)
    parts += axis(y_ticks, sy, (x0, x1), f"{metric} (higher is better)", vertical=True)
    parts += axis(x_ticks, sx, (y0, y1), "model size (MB)", vertical=False)
    parts.append(line(sx(before), sy(q_before), sx(after), sy(q_after), extra=' stroke-dasharray="4 3"'))
    # The original usually sits higher: its label goes above its point, the result's below.
    for series, size, value, dy in (("original", before, q_before, -10), ("result", after, q_after, 19)):
        x, y = sx(size), sy(value)
        right = x > (x0 + x1) / 2  # labels point into the plot so they never leave it
        label = f"{series}: {fmt(size)} MB, {_q(value)}"
        parts.append(f'<circle class="mark" data-series="{series}" data-value="{data(value)}" data-x="{data(size)}" '
                     f'cx="{x:.1f}" cy="{y:.1f}" r="6" fill="{PALETTE[series]}"><title>{esc(label)}</title></circle>')
        parts.append(text(x + (-4 if right else 4), y + dy, label, anchor="end" if right else "start"))
    for index, technique, size in between:
        tip = f"after step {index} ({technique}): {fmt(size)} MB"
        parts.append(f'<circle class="mark" data-series="step" data-value="" data-x="{data(size)}" cx="{sx(size):.1f}" '
                     f'cy="{y1:.1f}" r="5" fill="#fff" stroke="{PALETTE["axis"]}" stroke-width="2">'
                     f"<title>{esc(tip)}</title></circle>")
        parts.append(text(sx(size), y1 - 9, str(index)))
    notes = ", ".join(f"{index} = {technique} ({fmt(size)} MB)" for index, technique, size in between)
    height = y1 + 50
    if between:
        parts.append(text(16, y1 + 62, clip(f"Steps: {notes}", fits(WIDTH - 32)), anchor="start"))
        height += 22
    ratio = f", {fmt(before / after)} times smaller" if after > 0 else ""
    desc = (f"Original: {fmt(before)} MB with {metric} {_q(q_before)}. Result: {fmt(after)} MB with "
            f"{metric} {_q(q_after)}{ratio}." + (f" Size after intermediate steps: {notes}." if between else ""))
    return document("size-quality", height, "Model size versus quality", desc, parts)


def step_waterfall_chart(report: dict) -> str | None:
    """Size from the original down through each step to the result; each step floats from the size
    before it to the size after it, so the bars add up."""
    before, after = _mb(get(report, "original", "size_bytes")), _mb(get(report, "result", "size_bytes"))
    if before is None or after is None:
        return None
    # (name, technique, from, to): original and result stand on zero, the steps float between levels.
    columns, level = [("original", "", 0.0, before)], before
    for index, step in enumerate(_steps(report), 1):
        size = _mb(step.get("size_bytes_after"))
        if size is not None:
            columns.append((f"step {index}", str(step.get("technique", "")), level, size))
            level = size
    if len(columns) > 1 and abs(level - after) > 1e-6:  # export or packaging changed the size again
        columns.append(("export", "", level, after))
    columns.append(("result", "", 0.0, after))
    quality = _quality(report)
    width = max(WIDTH, 80 + 76 * len(columns))
    deltas = [end - start for name, _, start, end in columns if name not in SIDES]
    items = [BOXES[0]]  # a legend entry only for the kinds of step this job has
    items += [("step: smaller", PALETTE["step"], "box")] if any(delta <= 0 for delta in deltas) else []
    items += [("step: larger", PALETTE["increase"], "box")] if any(delta > 0 for delta in deltas) else []
    items += [BOXES[1]]
    parts, top = legend(items, 16, 10, width - 32)
    tick_values = ticks([before * 1.2, after * 1.25, *(column[3] for column in columns)], zero=True)
    x0, y0, x1, y1 = 16 + axis_room(tick_values), top + 34, width - 12, top + 234
    scale = Scale.over(tick_values, y1, y0)
    parts += axis(tick_values, scale, (x0, x1), "model size (MB)", vertical=True)
    slot = (x1 - x0) / len(columns)
    half = min(slot * 0.32, 34)
    for index, (name, technique, start, end) in enumerate(columns):
        cx, delta = x0 + slot * (index + 0.5), end - start
        kind = name if name in SIDES else "step"
        colour = PALETTE["increase" if kind == "step" and delta > 0 else kind]
        if kind == "step":
            label = f"{'+' if delta > 0 else '−' if delta < 0 else '±'}{fmt(abs(delta))} MB"
        else:
            label = f"{fmt(end)} MB"
        tip = f"{name} {technique}: {label}".replace("  ", " ")
        parts.append(bar(cx - half, scale(start), cx + half, scale(end), kind, delta if kind == "step" else end,
                         colour, tip, " increase" if colour == PALETTE["increase"] else ""))
        following = columns[index + 1] if index + 1 < len(columns) else None
        # A dotted line carries the level into the next column, where that column starts from it.
        if following and abs((following[3] if following[0] == "result" else following[2]) - end) <= 1e-9:
            parts.append(line(cx + half, scale(end), cx + slot - half, scale(end), extra=' stroke-dasharray="2 2"'))
        parts.append(text(cx, scale(max(start, end)) - 6, clip(label, fits(slot))))
        parts.append(text(cx, y1 + 18, clip(name, fits(slot))))
        parts.append(text(cx, y1 + 34, clip(technique, fits(slot))))
    # The end point's quality sits on a line of its own, under the result's column: there is no room
    # above short bars next to each other.
    note = f"result: {quality[0]} {_q(quality[2])}" if quality else "result: quality not measured"
    parts.append(text(x1, y1 + 52, note, anchor="end", extra=' font-weight="bold"'))
    parts.append(line(x0, y1, x1, y1))
    said = "; ".join(f"{name} {technique} to {fmt(end)} MB".replace("  ", " ") for name, technique, _, end in columns)
    end_quality = f" The result's {quality[0]} is {_q(quality[2])}." if quality else ""
    return document("waterfall", y1 + 62, "Model size through each step", f"Size: {said}.{end_quality}", parts,
                    width)


def latency_chart(report: dict) -> str | None:
    """p50 latency per batch size, original against result, with p95 as a whisker. One panel per batch
    size, each on its own scale: batch 32 takes some twenty times as long as batch 1 and would flatten it."""
    def stats(side: str, key: str) -> tuple[float | None, float | None]:
        entry = get(report, side, "latency", key)
        return num(get(entry, "p50_ms")), num(get(entry, "p95_ms"))

    sections = [get(report, side, "latency") for side in SIDES]
    keys = {key for section in sections if isinstance(section, dict) for key in section
            if isinstance(key, str) and key.startswith("batch_") and key[6:].isdigit()}
    keys = sorted((key for key in keys if any(stats(side, key)[0] is not None for side in SIDES)),
                  key=lambda key: int(key[6:]))
    if not keys:
        return None
    parts, top = legend(BOXES + [("whisker: p95", PALETTE["text"], "line")], 16, 10, WIDTH - 32)
    panel, said = (WIDTH - 8) / len(keys), []
    for index, key in enumerate(keys):
        bars = []
        for side in SIDES:
            p50, p95 = stats(side, key)
            if p50 is not None:
                whisker = (p50, p95) if p95 is not None and p95 >= p50 else None
                tip = f"{side}, batch {key[6:]}: p50 {fmt(p50)} ms, p95 {fmt(p95)} ms"
                bars.append(Bar(side, p50, f"{fmt(p50)} ms", tip, whisker))
                said.append(tip)
        parts += bar_panel(bars, (8 + panel * index, top + 14, panel * (index + 1) - 6, top + 214),
                           "latency (ms)", f"batch size {key[6:]}")
    return document("latency", top + 244, "Latency, original versus result", "; ".join(said) + ".", parts)


def slice_chart(report: dict, max_rows: int = 25) -> str | None:
    """Quality per slice before and after, flagged slices first and marked in colour and in words,
    with the overall figures as reference lines."""
    section = get(report, "slices")
    rows = [row for row in (get(section, "slices") or []) if isinstance(row, dict)
            and num(row.get("before")) is not None and num(row.get("after")) is not None]
    if not rows:
        return None
    rows.sort(key=lambda row: (not row.get("flagged"), -(num(row.get("drop")) or 0.0), str(row.get("name"))))
    shown, hidden = rows[:max_rows], len(rows) - max_rows
    metric = str(get(section, "metric") or "quality")
    overall = [(name, num(get(section, "overall", name))) for name in ("before", "after")]
    overall = [(name, value) for name, value in overall if value is not None]
    values = [num(row[side]) for row in shown for side in ("before", "after")] + [value for _, value in overall]
    spread = (max(values) - min(values)) * 0.1
    tick_values = ticks([min(values) - spread, max(values)])
    reference = {"before": (PALETTE["axis"], "2 3"), "after": (PALETTE["text"], "6 3")}
    items = [("before", PALETTE["original"], "box"), ("after", PALETTE["result"], "box"),
             ("after, flagged ▲", PALETTE["flagged"], "box")]
    items += [(f"overall {name} {_q(value)}", reference[name][0], "line") for name, value in overall]
    parts, top = legend(items, 16, 10, WIDTH - 32)
    # The first tick label is centred on the plot's left edge: leave it half its width.
    x0, x1, row_height = 10 + len(tick_text(tick_values)(tick_values[0])) * SMALL * CHAR / 2, WIDTH - 56, 48
    y0 = top + 6
    y1 = y0 + row_height * len(shown)
    scale = Scale.over(tick_values, x0, x1)
    start = tick_values[0]
    parts += axis(tick_values, scale, (y0, y1), f"{metric}, higher is better", vertical=False)
    # Reference lines first, so slice names and bars are drawn over them.
    for name, value in overall:
        colour, dash = reference[name]
        parts.append(f'<line class="reference" data-series="overall-{name}" data-value="{data(value)}" '
                     f'x1="{scale(value):.1f}" x2="{scale(value):.1f}" y1="{y0:.1f}" y2="{y1:.1f}" '
                     f'stroke="{colour}" stroke-width="2" stroke-dasharray="{dash}"/>')
    said = []
    for index, row in enumerate(shown):
        y, flagged, name = y0 + index * row_height, bool(row.get("flagged")), str(row.get("name", ""))
        count = num(row.get("count"))
        notes = f" (n={f'{count:,.0f}' if count is not None else '?'}{', few rows' if row.get('small') else ''})"
        marker = (f'<tspan class="flag-marker" fill="{PALETTE["flagged"]}" font-weight="bold">▲ flagged </tspan>'
                  if flagged else "")
        room = fits(WIDTH - 32) - len(notes) - (10 if flagged else 0)
        parts.append(f'<g class="slice{" flagged" if flagged else ""}" data-slice="{esc(name)}">')
        parts.append(f'<text x="{x0:.1f}" y="{y + 13}" font-size="{SMALL}"{HALO}>{marker}<tspan font-weight="bold">'
                     f"{esc(clip(name, room))}</tspan>{esc(notes)}</text>")
        for offset, side in ((18, "before"), (30, "after")):
            value = num(row[side])
            colour = PALETTE["flagged" if flagged and side == "after" else SIDES[side == "after"]]
            parts.append(bar(scale(start), y + offset, scale(value), y + offset + 11, side, value, colour,
                             f"{name} {side}: {_q(value)}", " flagged" if flagged and side == "after" else ""))
            parts.append(text(scale(value) + 4, y + offset + 10, _q(value), anchor="start", size=SMALL - 1, extra=HALO))
        parts.append("</g>")
        said.append(f"{name}: {_q(num(row['before']))} before, {_q(num(row['after']))} after, "
                    f"drop {fmt(num(row.get('drop')))}{', flagged' if flagged else ''}")
    height = y1 + 48
    if hidden > 0:
        parts.append(text(16, height, f"{hidden} more slices not shown.", anchor="start"))
        height += 12
    flagged_names = [str(row.get("name")) for row in rows if row.get("flagged")]
    desc = (f"{metric} per slice. " + "; ".join(said) + ". Overall: "
            + (", ".join(f"{name} {_q(value)}" for name, value in overall) or "not reported")
            + (f". Flagged: {', '.join(flagged_names)}." if flagged_names else ". No slice is flagged."))
    return document("slices", height, "Quality per slice, before and after", desc, parts)


def energy_chart(report: dict) -> str | None:
    """The job's own energy per stage, CPU, GPU and RAM stacked."""
    stages = [stage for stage in (get(report, "energy", "stages") or []) if isinstance(stage, dict)]
    if not stages:
        return None
    components = ("cpu", "gpu", "ram")
    amounts = [[max(num(stage.get(f"{c}_kwh")) or 0.0, 0.0) for c in components] for stage in stages]
    factor, unit = _energy_unit(max(sum(row) for row in amounts))
    tick_values = ticks([sum(row) * factor for row in amounts], zero=True)
    method = str(get(report, "energy", "method") or "unknown")
    parts, top = legend([(c.upper(), PALETTE[c], "box") for c in components], 16, 10, WIDTH - 32)
    names = [str(stage.get("stage", "")) for stage in stages]
    x0 = 16 + min(max(len(name) for name in names), 20) * SMALL * CHAR + 6
    x1, y0, row = WIDTH - 56, top + 4, 28
    y1 = y0 + row * len(stages)
    scale = Scale.over(tick_values, x0, x1)
    parts += axis(tick_values, scale, (y0, y1), f"energy ({unit}, {method})", vertical=False)
    said = []
    for index, (name, row_amounts) in enumerate(zip(names, amounts, strict=True)):
        y, start = y0 + index * row + 5, 0.0
        parts.append(text(x0 - 6, y + 13, clip(name, 20), anchor="end"))
        for component, amount in zip(components, row_amounts, strict=True):
            tip = f"{name}, {component.upper()}: {fmt(amount * factor)} {unit}"
            parts.append(bar(scale(start * factor), y, scale((start + amount) * factor), y + row - 10, component,
                             amount * factor, PALETTE[component], tip))
            start += amount
        total = fmt(start * factor)
        parts.append(text(scale(start * factor) + 4, y + 13, total, anchor="start", size=SMALL - 1))
        said.append(f"{name} {total} {unit}")
    parts.append(line(x0, y0, x0, y1))
    total_kwh = num(get(report, "energy", "total", "energy_kwh"))
    overall = f" Total {fmt(total_kwh * factor)} {unit}." if total_kwh is not None else ""
    desc = f"Energy of the job per stage ({method}): " + "; ".join(said) + "." + overall
    return document("energy", y1 + 48, "Energy of this job per stage", desc, parts)


def inference_energy_chart(report: dict) -> str | None:
    """Energy per 1,000 inferences before and after, the standard deviation over runs as error bars."""
    sides = [(side, num(get(report, "inference", side, "kwh_per_1000_mean")),
              max(num(get(report, "inference", side, "kwh_per_1000_std")) or 0.0, 0.0)) for side in SIDES]
    sides = [(side, mean, std) for side, mean, std in sides if mean is not None]
    if not sides:
        return None
    factor, unit = _energy_unit(max(mean + std for _, mean, std in sides))
    bars = [Bar(side, mean * factor, f"{fmt(mean * factor)} {unit}",
                f"{side}: {fmt(mean * factor)} ± {fmt(std * factor)} {unit}",
                ((mean - std) * factor, (mean + std) * factor) if std > 0 else None) for side, mean, std in sides]
    parts, top = legend(BOXES + [("whisker: ± std over runs", PALETTE["text"], "line")], 16, 10, WIDTH - 32)
    verdict = get(report, "payback", "verdict")
    parts += bar_panel(bars, (8, top + 14, WIDTH - 8, top + 214), f"energy / 1,000 inferences ({unit})",
                       f"payback: {verdict}" if isinstance(verdict, str) else "original and result")
    method = get(report, "inference", "method")
    if isinstance(method, str):
        parts.append(text(WIDTH / 2, top + 256, f"{method}; device energy, without PUE", size=SMALL,
                          extra=f' fill="{PALETTE["axis"]}"'))
    desc = "Energy per 1,000 inferences: " + "; ".join(item.tip for item in bars) + "."
    explanation = get(report, "payback", "explanation")
    desc += f" {explanation}" if isinstance(explanation, str) else ""
    return document("inference-energy", top + 266, "Energy per 1,000 inferences", desc, parts)


CHARTS: list[tuple[str, Callable[[dict], str | None]]] = [
    ("Goal search: size against fidelity", search_front_chart),
    ("Size versus quality", size_quality_chart),
    ("Size through the steps", step_waterfall_chart),
    ("Latency", latency_chart),
    ("Quality per slice", slice_chart),
    ("Energy of the job", energy_chart),
    ("Energy per 1,000 inferences", inference_energy_chart),
]


def all_charts(report: dict) -> list[tuple[str, str]]:
    """(title, svg) of every chart the report has data for, in display order."""
    if not isinstance(report, dict):
        return []
    return [(title, svg) for title, chart in CHARTS if (svg := chart(report)) is not None]
