"""Small SVG building blocks for the dashboard charts: number formatting, scales, axes, legends, marks.

Every piece of text passes through `esc`, so report data (slice names are user data) cannot inject markup.
"""

import hashlib
import html
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Every colour reaches at least 4.5:1 against white (WCAG AA even for text), so marks drawn in
# a series colour stay legible for low-vision readers; only gridlines are lighter, being decoration.
PALETTE = {
    "original": "#1f5f99",
    "result": "#b35900",
    "step": "#2e7d32",
    "increase": "#b3261e",
    "flagged": "#b3261e",
    "cpu": "#1f5f99",
    "gpu": "#b35900",
    "ram": "#6a3d9a",
    "axis": "#595959",
    "text": "#1a1a1a",
}
GRID = "#e3e3e3"
# viewBox units. The dashboard shows charts from about 350 px wide, so a narrow box keeps 13-unit
# text near 10 px on a phone; wider screens cap the chart at 1.3 times this.
WIDTH = 460
FONT = 14
SMALL = 13
CHAR = 0.62  # average glyph width per font size unit, to keep estimated label widths inside the box


def get(data: Any, *keys: str) -> Any:
    """Walks nested dicts; None as soon as a section is missing, null or not a dict (older reports)."""
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def num(value: Any) -> float | None:
    """A finite number or None: unavailable figures may be null, NaN or absent."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def clip(text: str, chars: float) -> str:
    """Shortens before escaping, so an entity is never cut in half."""
    chars = max(int(chars), 4)
    return text if len(text) <= chars else text[: chars - 1] + "…"


def fits(width: float, size: int = SMALL) -> float:
    """About how many characters fit in `width` units at font `size`."""
    return width / (size * CHAR)


def fmt(value: float | None, digits: int = 3) -> str:
    """`digits` significant figures without exponent notation, thousands separated."""
    if value is None:
        return "n/a"
    if value == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value + 0.0:,.{decimals}f}"


def data(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def ticks(values: list[float | None], *, zero: bool = False, count: int = 5) -> list[float]:
    """Round tick values covering `values`; a single, repeated or missing value still gets a range."""
    present = [value for value in values if value is not None]
    lo, hi = (min(present), max(present)) if present else (0.0, 1.0)
    if zero:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo <= abs(hi) * 1e-9:
        pad = abs(hi) * 0.1 or 1.0
        lo, hi = (lo, hi + pad) if zero and lo == 0 else (lo - pad, hi + pad)
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [index * step for index in range(first, last + 1)]


def tick_text(values: list[float]) -> Callable[[float], str]:
    """Formats ticks with as many decimals as their step needs, the same for all of them."""
    step = values[1] - values[0]
    decimals = next((d for d in range(13) if abs(round(step, d) - step) <= step * 1e-6), 12)
    return lambda value: f"{value + 0.0:,.{decimals}f}"


@dataclass(frozen=True)
class Scale:
    """Maps [lo, hi] onto pixels [start, end], clamped so a mark never leaves its plot."""

    lo: float
    hi: float
    start: float
    end: float

    @classmethod
    def over(cls, tick_values: list[float], start: float, end: float) -> "Scale":
        return cls(tick_values[0], tick_values[-1], start, end)

    def __call__(self, value: float) -> float:
        share = (value - self.lo) / (self.hi - self.lo) if self.hi != self.lo else 0.0
        return self.start + min(max(share, 0.0), 1.0) * (self.end - self.start)


def axis_room(tick_values: list[float]) -> float:
    """Width a vertical axis needs left of its plot: tick labels plus the rotated title."""
    text = tick_text(tick_values)
    return 30 + max(len(text(tick)) for tick in tick_values) * SMALL * CHAR


def axis(tick_values: list[float], scale: Scale, across: tuple[float, float], label: str, *,
         vertical: bool) -> list[str]:
    """Gridlines, tick labels and the axis title. `across` is the plot's extent the other way:
    x0, x1 for a vertical value axis (labels left of x0), y0, y1 for a horizontal one (labels below y1)."""
    text = tick_text(tick_values)
    a0, a1 = across
    style = f'font-size="{SMALL}" fill="{PALETTE["axis"]}"'
    parts = ['<g class="axis">']
    # Side by side, long labels (huge ranges) would run into each other: label every n-th tick only.
    spacing = abs(scale.end - scale.start) / max(len(tick_values) - 1, 1)
    widest = max(len(text(tick)) for tick in tick_values) * SMALL * CHAR + 6
    every = 1 if vertical else max(1, math.ceil(widest / spacing))
    for index, tick in enumerate(tick_values):
        p = scale(tick)
        if vertical:
            parts.append(f'<line x1="{a0:.1f}" x2="{a1:.1f}" y1="{p:.1f}" y2="{p:.1f}" stroke="{GRID}"/>')
            parts.append(f'<text x="{a0 - 6:.1f}" y="{p + 4:.1f}" text-anchor="end" {style}>{text(tick)}</text>')
        else:
            parts.append(f'<line x1="{p:.1f}" x2="{p:.1f}" y1="{a0:.1f}" y2="{a1:.1f}" stroke="{GRID}"/>')
            if index % every == 0:
                parts.append(f'<text x="{p:.1f}" y="{a1 + 17:.1f}" text-anchor="middle" {style}>{text(tick)}</text>')
    middle = (scale.start + scale.end) / 2
    if vertical:
        x = a0 - axis_room(tick_values) + 14
        parts.append(f'<text transform="translate({x:.1f} {middle:.1f}) rotate(-90)" text-anchor="middle" '
                     f"{style}>{esc(label)}</text>")
    else:
        parts.append(f'<text x="{middle:.1f}" y="{a1 + 37:.1f}" text-anchor="middle" {style}>{esc(label)}</text>')
    return [*parts, "</g>"]


def legend(items: list[tuple[str, str, str]], x: float, y: float, width: float) -> tuple[list[str], float]:
    """Swatch and label per (label, colour, kind: box, line or hollow), wrapping; returns the markup
    and the y below it. Swatches carry no data-series: they are not data marks."""
    parts, cx, cy = ['<g class="legend">'], x, y
    for label, colour, kind in items:
        room = 30 + len(label) * SMALL * CHAR
        if cx + room > x + width and cx > x:
            cx, cy = x, cy + 22
        if kind == "line":
            parts.append(f'<line x1="{cx}" x2="{cx + 14}" y1="{cy + 7}" y2="{cy + 7}" stroke="{colour}" '
                         'stroke-width="2" stroke-dasharray="4 2"/>')
        elif kind == "hollow":
            parts.append(f'<circle cx="{cx + 7}" cy="{cy + 7}" r="5" fill="#fff" stroke="{colour}" stroke-width="2"/>')
        else:
            parts.append(f'<rect x="{cx}" y="{cy + 1}" width="12" height="12" fill="{colour}"/>')
        parts.append(f'<text x="{cx + 19}" y="{cy + 12}" font-size="{SMALL}">{esc(label)}</text>')
        cx += room
    return [*parts, "</g>"], cy + 22


def text(x: float, y: float, content: str, *, anchor: str = "middle", size: int = SMALL, extra: str = "") -> str:
    """A label; `content` is plain text and is escaped here."""
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}"{extra}>{esc(content)}</text>'


def bar(x0: float, y0: float, x1: float, y1: float, series: str, value: float | None, colour: str, tip: str,
        extra_class: str = "") -> str:
    """A data mark; corners in any order, so negative values draw without special cases."""
    return (
        f'<rect class="mark{extra_class}" data-series="{esc(series)}" data-value="{data(value)}" '
        f'x="{min(x0, x1):.1f}" y="{min(y0, y1):.1f}" width="{abs(x1 - x0):.1f}" height="{abs(y1 - y0):.1f}" '
        f'fill="{colour}"><title>{esc(tip)}</title></rect>'
    )


def line(x0: float, y0: float, x1: float, y1: float, colour: str = PALETTE["axis"], extra: str = "") -> str:
    return f'<line x1="{x0:.1f}" y1="{y0:.1f}" x2="{x1:.1f}" y2="{y1:.1f}" stroke="{colour}"{extra}/>'


def document(name: str, height: float, title: str, desc: str, body: list[str], width: float = WIDTH) -> str:
    """The root: role img, labelled by a <title> and a <desc> that state the numbers in words."""
    # Ids derive from the content, so two charts on one page (or two jobs) never share a <title> id.
    uid = f"chart-{name}-" + hashlib.sha1(f"{title}\n{desc}".encode()).hexdigest()[:8]
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart chart-{name}" role="img" '
        f'aria-labelledby="{uid}-title {uid}-desc" viewBox="0 0 {width:.0f} {height:.0f}" width="100%" '
        f'style="max-width:{width * 1.3:.0f}px;height:auto" font-family="system-ui, sans-serif" '
        f'font-size="{FONT}" fill="{PALETTE["text"]}">'
        f'<title id="{uid}-title">{esc(title)}</title><desc id="{uid}-desc">{esc(desc)}</desc>'
        + "".join(body) + "</svg>"
    )


@dataclass(frozen=True)
class Bar:
    series: str
    value: float
    label: str
    tip: str
    whisker: tuple[float, float] | None = None


def bar_panel(bars: list[Bar], box: tuple[float, float, float, float], axis_label: str, caption: str) -> list[str]:
    """Vertical bars from zero with optional whiskers, on the panel's own scale, captioned below."""
    x0, y0, x1, y1 = box
    tops = [item.value for item in bars] + [item.whisker[1] for item in bars if item.whisker]
    tick_values = ticks([max(tops) * 1.15, *tops], zero=True)  # headroom for the value labels
    x0 += axis_room(tick_values)
    scale = Scale.over(tick_values, y1, y0)
    parts = axis(tick_values, scale, (x0, x1), axis_label, vertical=True)
    slot = (x1 - x0) / len(bars)
    half = min(slot * 0.3, 30)
    for index, item in enumerate(bars):
        cx = x0 + slot * (index + 0.5)
        parts.append(bar(cx - half, scale(0), cx + half, scale(item.value), item.series, item.value,
                         PALETTE[item.series], item.tip))
        top = scale(item.value)
        if item.whisker:
            low, high = scale(item.whisker[0]), scale(item.whisker[1])
            parts.append(
                f'<path class="whisker" data-series="{esc(item.series)}" data-value="{data(item.whisker[1])}" '
                f'd="M{cx:.1f} {low:.1f}V{high:.1f}M{cx - 7:.1f} {high:.1f}h14M{cx - 7:.1f} {low:.1f}h14" '
                f'stroke="{PALETTE["text"]}" stroke-width="1.5" fill="none"/>'
            )
            top = min(top, high)
        parts.append(text(cx, top - 6, clip(item.label, fits(slot))))
    parts.append(line(x0, scale(0), x1, scale(0)))
    parts.append(text((x0 + x1) / 2, y1 + 20, clip(caption, fits(x1 - x0, FONT)), size=FONT))
    return parts
