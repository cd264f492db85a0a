"""The report's latency plot: every latency figure that has a target, as a bar of its value
over its target, so figures in microseconds and in seconds share one axis.

Each row: the figure's name; a bar from 0 to ``value / target`` on a linear axis from 0 to
2x the target (a longer bar is cut at 2x and marked with an arrow), green when the target is
met, red when not; a vertical line at 1x (the target); a dark tick where the previous run's
value was; the value and target written at the right.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from _png import GLYPH_H, Canvas, text_width

__all__ = ["latency_chart", "fmt_value"]

SCALE = 2  # font scale
ROW = 30
LEFT_PAD = 16
BAR_W = 420
MAX_RATIO = 2.0
GREEN = (46, 160, 67)
RED = (207, 34, 46)
GREY = (110, 110, 110)
LIGHT = (225, 225, 225)
INK = (20, 20, 20)


def fmt_value(value: float, unit: str) -> str:
    """``0.123 ms``, ``1,234 /s``, ``93.1 %``: three significant figures, grouped thousands."""
    a = abs(value)
    if a >= 1000:
        text = f"{value:,.0f}"
    elif a >= 100:
        text = f"{value:.0f}"
    elif a >= 10:
        text = f"{value:.1f}"
    elif a >= 1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".strip()


def _ratio(f: Mapping[str, Any], value: float) -> float:
    target = float(f["target"])
    if f.get("better") == "higher":
        return target / value if value > 0 else MAX_RATIO + 1
    return value / target if target > 0 else MAX_RATIO + 1


def latency_chart(
    figures: Sequence[Mapping[str, Any]],
    previous: Mapping[tuple[str, str], float] | None = None,
    title: str = "Latency against targets (bar at or left of the line: target met)",
    subtitle: str = "",
) -> Canvas:
    """The chart of the latency figures with a target among ``figures`` (see the module
    docstring); ``previous`` maps (bench, name) to the last run's value; ``subtitle`` says
    which run it is."""
    rows = [f for f in figures if f.get("latency") and f.get("target")]
    labels = [f"{f['bench']}: {f['name']}" for f in rows]
    notes = [f"{fmt_value(f['value'], f['unit'])} / {fmt_value(f['target'], f['unit'])}"
             for f in rows]  # fmt: skip
    label_w = max([text_width(t, SCALE) for t in labels] + [200])
    note_w = max([text_width(t, SCALE) for t in notes] + [100])
    x_bar = LEFT_PAD + label_w + 16
    width = x_bar + BAR_W + 24 + note_w + LEFT_PAD
    top = 24 + 3 * ROW
    height = top + max(1, len(rows)) * ROW + 2 * ROW
    c = Canvas(width, height)
    c.text(LEFT_PAD, 16, title, INK, SCALE)
    c.text(LEFT_PAD, 16 + ROW * 2 // 3, subtitle, GREY, SCALE)
    glyph_h = GLYPH_H * SCALE
    # The axis: 0, 0.5x, 1x (the target), 1.5x, 2x.
    for k in range(5):
        ratio = k * 0.5
        x = x_bar + round(ratio / MAX_RATIO * BAR_W)
        c.line_v(x, top - 6, len(rows) * ROW + 12, RED if k == 2 else LIGHT, 2 if k == 2 else 1)
        label = "target" if k == 2 else f"{ratio:g}x"
        c.text(x - text_width(label, SCALE) // 2, top - 12 - glyph_h, label,
               RED if k == 2 else GREY, SCALE)  # fmt: skip
    if not rows:
        c.text(LEFT_PAD, top + 8, "no latency figure with a target was recorded", GREY, SCALE)
    for i, (f, label, note) in enumerate(zip(rows, labels, notes, strict=True)):
        y = top + i * ROW
        text_y = y + (ROW - glyph_h) // 2
        c.text(LEFT_PAD, text_y, label, INK, SCALE)
        ratio = _ratio(f, float(f["value"]))
        shown = max(0.0, min(ratio, MAX_RATIO))
        met = ratio <= 1.0
        bar = max(2, round(shown / MAX_RATIO * BAR_W))
        c.rect(x_bar, y + 6, bar, ROW - 12, GREEN if met else RED)
        if ratio > MAX_RATIO:
            c.text(x_bar + BAR_W + 4, text_y, ">", RED, SCALE)
        before = (previous or {}).get((f["bench"], f["name"]))
        if before is not None:
            prev_ratio = max(0.0, min(_ratio(f, before), MAX_RATIO))
            x = x_bar + round(prev_ratio / MAX_RATIO * BAR_W)
            c.rect(x - 1, y + 2, 3, ROW - 4, INK)
        c.text(x_bar + BAR_W + 24, text_y, note, INK if met else RED, SCALE)
    legend_y = top + max(1, len(rows)) * ROW + ROW // 2
    c.rect(LEFT_PAD, legend_y, 14, 14, GREEN)
    x = c.text(LEFT_PAD + 20, legend_y, "met", INK, SCALE)
    c.rect(x + 16, legend_y, 14, 14, RED)
    x = c.text(x + 36, legend_y, "missed", INK, SCALE)
    c.rect(x + 18, legend_y - 2, 3, 18, INK)
    c.text(x + 28, legend_y, "previous run", INK, SCALE)
    return c
