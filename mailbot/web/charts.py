"""Chart geometry for the dashboard: column charts over time and bar lists, as plain data.

Only numbers and label strings are computed here; templates/web/dashboard_charts.html.j2
draws them as inline SVG, so every label (intent, reason and mailbox names come from
configuration and mail) passes through the template's autoescape. Colours are CSS classes
(desk.css): the desk's CSP allows no style attributes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

WIDTH, HEIGHT = 720.0, 240.0
LEFT, RIGHT, TOP, BOTTOM = 60.0, 12.0, 12.0, 36.0
ROW_HEIGHT, LABEL_WIDTH = 24.0, 220.0
MAX_X_LABELS = 12
LABEL_CHARS = 32

Format = Callable[[float], str]


def count(value: float) -> str:
    """A whole number: 1234 -> '1,234'."""
    return f"{value:,.0f}"


def share(value: float) -> str:
    """A fraction as a percentage: 0.4 -> '40%'."""
    return f"{value:.0%}" if value in (0, 1) else f"{value:.1%}"


def axis(value: float) -> str:
    """An axis tick: 1,000 or 0.25 (no more digits than it needs)."""
    return count(value) if float(value).is_integer() else f"{value:.6g}"


def decimal(value: float) -> str:
    """A small number with enough digits to tell values apart."""
    if value == 0:
        return "0"
    return f"{value:.4f}" if abs(value) >= 0.001 else f"{value:.3g}"


@dataclass(frozen=True, slots=True)
class Series:
    """One named row of values, one per category (None: nothing to show there)."""

    name: str
    css: str
    values: tuple[float | None, ...]


@dataclass(frozen=True, slots=True)
class Mark:
    """One rectangle with its hover text (an SVG <title>)."""

    x: float
    y: float
    width: float
    height: float
    css: str
    tip: str


@dataclass(frozen=True, slots=True)
class Tick:
    pos: float
    text: str


@dataclass(frozen=True, slots=True)
class Label:
    """A bar list's row label: shown (perhaps cut short) and in full."""

    y: float
    text: str
    full: str
    value: str = ""
    value_x: float = 0.0


@dataclass(frozen=True, slots=True)
class Chart:
    """Everything the template needs to draw one chart and its table fallback."""

    key: str
    title: str
    description: str
    kind: str  # "columns" (categories along x) or "bars" (one labelled row each)
    width: float
    height: float
    marks: tuple[Mark, ...] = ()
    x_ticks: tuple[Tick, ...] = ()
    y_ticks: tuple[Tick, ...] = ()
    labels: tuple[Label, ...] = ()
    legend: tuple[tuple[str, str], ...] = ()
    columns: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()
    summary: str = ""
    empty: bool = True
    plot: tuple[float, float, float, float] = field(default=(LEFT, TOP, WIDTH - RIGHT,
                                                             HEIGHT - BOTTOM))


def nice_top(value: float, steps: int = 4) -> tuple[float, float]:
    """An axis maximum at or above `value` and a round step that divides it."""
    if value <= 0:
        return 1.0, 0.25
    raw = value / steps
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return step * math.ceil(value / step - 1e-9), step


def _cell(value: float | None, fmt: Format) -> str:
    return "–" if value is None else fmt(value)


def _trim(text: str, limit: int = LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def column_chart(key: str, title: str, description: str, categories: Sequence[str],
                 series: Sequence[Series], *, stacked: bool = True, fmt: Format = count,
                 as_share: bool = False, tick_text: Callable[[str], str] | None = None,
                 unit: str = "", summary: str = "") -> Chart:
    """Columns over time: stacked (parts of a whole) or side by side (to compare)."""
    columns = ("", *[s.name for s in series])
    rows = tuple((c, *[_cell(s.values[i], fmt) for s in series])
                 for i, c in enumerate(categories))
    legend = tuple((s.name, s.css) for s in series) if len(series) > 1 else ()
    totals = [sum(s.values[i] or 0 for s in series) if stacked else
              max((s.values[i] or 0 for s in series), default=0)
              for i in range(len(categories))]
    if not categories or not any(totals):
        return Chart(key, title, description, "columns", WIDTH, HEIGHT, legend=legend,
                     columns=columns, rows=rows, summary=summary)
    left, top, right, bottom = LEFT, TOP, WIDTH - RIGHT, HEIGHT - BOTTOM
    top_value, step = (1.0, 0.25) if as_share else nice_top(max(totals))
    scale = (bottom - top) / top_value
    slot = (right - left) / len(categories)
    gap = min(slot * 0.2, 6.0)
    marks: list[Mark] = []
    for i, category in enumerate(categories):
        x0 = left + i * slot + gap / 2
        inner = slot - gap
        base = bottom
        for n, s in enumerate(series):
            value = s.values[i]
            if not value:
                continue
            h = value * scale
            tip = f"{category} · {s.name}: {fmt(value)}{unit}"
            if stacked:
                marks.append(Mark(x0, base - h, inner, h, s.css, tip))
                base -= h
            else:
                w = inner / len(series)
                marks.append(Mark(x0 + n * w, bottom - h, w, h, s.css, tip))
    every = max(1, math.ceil(len(categories) / MAX_X_LABELS))
    shown = tick_text or (lambda c: c)
    x_ticks = tuple(Tick(left + (i + 0.5) * slot, shown(c))
                    for i, c in enumerate(categories) if i % every == 0)
    y_ticks = tuple(Tick(bottom - k * step * scale, (f"{k * step:.0%}" if as_share
                                                     else axis(k * step)))
                    for k in range(int(round(top_value / step)) + 1))
    return Chart(key, title, description, "columns", WIDTH, HEIGHT, tuple(marks), x_ticks,
                 y_ticks, (), legend, columns, rows, summary, empty=False)


def bar_list(key: str, title: str, description: str,
             items: Sequence[tuple[str, float, str]], *, fmt: Format = count,
             value_name: str = "messages", summary: str = "") -> Chart:
    """One horizontal bar per item (label, value, css class), longest first as given."""
    columns = ("", value_name)
    rows = tuple((label, fmt(value)) for label, value, _ in items)
    height = TOP + BOTTOM / 2 + ROW_HEIGHT * max(1, len(items))
    if not items or not any(value for _, value, _ in items):
        return Chart(key, title, description, "bars", WIDTH, height, columns=columns,
                     rows=rows, summary=summary)
    left, right = LABEL_WIDTH, WIDTH - RIGHT - 70.0  # room for the value after the bar
    top_value = max(value for _, value, _ in items)
    scale = (right - left) / top_value
    marks, labels = [], []
    for i, (label, value, css) in enumerate(items):
        y = TOP + i * ROW_HEIGHT
        width = max(value * scale, 0.0)
        marks.append(Mark(left, y + 3, width, ROW_HEIGHT - 6, css, f"{label}: {fmt(value)}"))
        labels.append(Label(y + ROW_HEIGHT / 2, _trim(label), label, fmt(value),
                            left + width + 6))
    return Chart(key, title, description, "bars", WIDTH, height, tuple(marks), (), (),
                 tuple(labels), (), columns, rows, summary, empty=False,
                 plot=(left, TOP, right, height))
