"""The goal search's chart: every candidate's size against its fidelity on the search rows, the Pareto
front joined by a line, the goal's limits as dashed lines, and the chosen candidate marked."""

from app.dashboard.svg import (
    PALETTE, WIDTH, Scale, axis, axis_room, clip, data, document, esc, fits, fmt, get, legend, line, num, text, ticks,
)

HALO = ' stroke="#fff" stroke-width="3" paint-order="stroke"'


def search_front_chart(report: dict) -> str | None:
    candidates = [c for c in get(report, "search", "candidates") or []
                  if num(c.get("size_ratio")) is not None and num(c.get("fidelity")) is not None]
    if not candidates:
        return None
    goal = get(report, "search", "goal") or {}
    floor, size_limit = num(goal.get("min_fidelity")), num(goal.get("max_size_ratio"))
    items = [("meets the goal", PALETTE["step"], "box"), ("misses it", PALETTE["axis"], "hollow"),
             ("chosen", PALETTE["result"], "box"), ("Pareto front", PALETTE["original"], "line")]
    parts, top = legend(items, 16, 10, WIDTH - 32)
    fidelities = [c["fidelity"] for c in candidates] + ([floor] if floor is not None else [])
    sizes = [c["size_ratio"] for c in candidates] + ([size_limit] if size_limit is not None else [])
    y_ticks = ticks([min(fidelities), max(fidelities)])
    x_ticks = ticks([0.0, max(sizes) * 1.05], zero=True)
    x0, y0, x1, y1 = 16 + axis_room(y_ticks), top + 14, WIDTH - 20, top + 234
    sx, sy = Scale.over(x_ticks, x0, x1), Scale.over(y_ticks, y1, y0)
    metric = candidates[0].get("fidelity_metric") or "fidelity"
    parts += axis(y_ticks, sy, (x0, x1), f"{metric} on the search rows", vertical=True)
    parts += axis(x_ticks, sx, (y0, y1), "size (fraction of the original)", vertical=False)
    dashed = ' stroke-dasharray="5 4" stroke-width="1.5"'
    if floor is not None:
        parts.append(line(x0, sy(floor), x1, sy(floor), PALETTE["increase"], dashed))
        parts.append(text(x1 - 2, sy(floor) - 5, f"min_fidelity {floor:g}", anchor="end", extra=HALO))
    if size_limit is not None:
        parts.append(line(sx(size_limit), y0, sx(size_limit), y1, PALETTE["increase"], dashed))
        parts.append(text(sx(size_limit) + 4, y0 + 12, f"max_size_ratio {size_limit:g}", anchor="start", extra=HALO))
    front = sorted((c for c in candidates if c.get("pareto")), key=lambda c: c["size_ratio"])
    for a, b in zip(front, front[1:]):
        parts.append(line(sx(a["size_ratio"]), sy(a["fidelity"]), sx(b["size_ratio"]), sy(b["fidelity"]),
                          PALETTE["original"], ' stroke-width="1.5"'))
    chosen = None
    for c in candidates:
        x, y = sx(c["size_ratio"]), sy(c["fidelity"])
        tip = (f"candidate {c['number']}: {c.get('description', '')}; {fmt(c['size_ratio'])}x, {metric} "
               f"{c['fidelity']:.4f}{'' if c.get('feasible') else ' (misses the goal)'}")
        series = "chosen" if c.get("chosen") else ("feasible" if c.get("feasible") else "infeasible")
        if c.get("chosen"):
            chosen = c
            style = f'r="8" fill="{PALETTE["result"]}"'
        elif c.get("feasible"):
            style = f'r="5" fill="{PALETTE["step"]}"'
        else:
            style = f'r="5" fill="#fff" stroke="{PALETTE["axis"]}" stroke-width="2"'
        parts.append(f'<circle class="mark" data-series="{series}" data-value="{data(c["fidelity"])}" '
                     f'data-x="{data(c["size_ratio"])}" cx="{x:.1f}" cy="{y:.1f}" {style}><title>{esc(tip)}</title></circle>')
    if chosen is not None:
        x, y = sx(chosen["size_ratio"]), sy(chosen["fidelity"])
        right = x > (x0 + x1) / 2
        label = clip(f"chosen: {chosen['number']}, {fmt(chosen['size_ratio'])}x", fits(WIDTH / 2))
        parts.append(text(x + (-10 if right else 10), y - 10, label, anchor="end" if right else "start", extra=HALO))
    feasible = sum(1 for c in candidates if c.get("feasible"))
    desc = (f"{len(candidates)} candidates, {feasible} meeting the goal, {len(front)} on the Pareto front. "
            + (f"Chosen: candidate {chosen['number']} ({chosen.get('description', '')}) at {fmt(chosen['size_ratio'])}x "
               f"the size with {metric} {chosen['fidelity']:.4f}." if chosen else ""))
    return document("search-front", y1 + 50, "Candidates of the goal search: size against fidelity", desc, parts)
