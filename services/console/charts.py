"""Chart geometry for the finance dashboard: plain numbers that the templates draw as
inline SVG (templates/_charts.html). No JavaScript, no chart library, no CDN: the page is
complete as the server sends it, and the tables under each chart carry the same numbers
for screen readers.

Everything here is pure (unit-tested): scales with "nice" round maxima, bar and line
coordinates, gaps where a day has no value, tick labels in the reader's language."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal

WIDTH = 720
HEIGHT = 220
LEFT, RIGHT, TOP, BOTTOM = 70, 12, 12, 30
"""Room for the y-axis labels on the left and the day labels below."""
MAX_DAY_LABELS = 10
NOW_GAP = 0.6
"""The budget chart's "now" column stands this many day slots apart from the days."""


@dataclass(frozen=True)
class Tick:
    y: float
    label: str


@dataclass(frozen=True)
class Label:
    x: float
    text: str


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    css: str
    title: str


@dataclass(frozen=True)
class Line:
    css: str
    segments: list[str]
    """``points`` of each polyline: a day without a value breaks the line."""
    dots: list[tuple[float, float, str]]


@dataclass(frozen=True)
class Chart:
    id: str
    width: int = WIDTH
    height: int = HEIGHT
    left: float = LEFT
    top: float = TOP
    right: float = WIDTH - RIGHT
    bottom: float = HEIGHT - BOTTOM
    y_ticks: list[Tick] = field(default_factory=list)
    x_labels: list[Label] = field(default_factory=list)
    bars: list[Bar] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)


# --- scales and labels ------------------------------------------------------------------


def nice_max(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10ⁿ at or above ``value`` (1 for nothing)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if value <= step * power * (1 + 1e-12):
            return step * power
    return 10.0 * power  # pragma: no cover - the loop always returns


def plain_number(value: float) -> str:
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return text or "0"


def compact_yuan(yuan: float, lang: str) -> str:
    """An axis label: 2.5万 / 1.2亿 in Chinese, 25k / 1.2M in English."""
    if lang == "en":
        for size, unit in ((1e9, "bn"), (1e6, "M"), (1e3, "k")):
            if abs(yuan) >= size:
                return plain_number(yuan / size) + unit
        return plain_number(yuan)
    for size, unit in ((1e8, "亿"), (1e4, "万")):
        if abs(yuan) >= size:
            return plain_number(yuan / size) + unit
    return plain_number(yuan)


DURATION_UNITS = (
    (86400.0, "d", "天"),
    (3600.0, "h", "小时"),
    (60.0, "min", "分钟"),
    (1.0, "s", "秒"),
)


def duration_unit(max_seconds: float) -> tuple[float, str, str]:
    """The unit an axis up to ``max_seconds`` reads best in: at least two of it."""
    for size, en, zh in DURATION_UNITS:
        if max_seconds >= 2 * size:
            return size, en, zh
    return DURATION_UNITS[-1]


def duration(seconds: float | None, lang: str) -> str:
    """A table cell: "2 h 30 min" / "2小时30分钟", to the second below a minute."""
    if seconds is None:
        return "—"
    if seconds < 10:
        # The simulated bank pays within a second: "0.6 s", not "1 s".
        text = plain_number(round(seconds, 1)) if seconds >= 0.05 else "0"
        return f"{text} s" if lang == "en" else f"{text}秒"
    whole = round(seconds)
    parts: list[tuple[int, str, str]] = []
    for size, en, zh in DURATION_UNITS:
        count, whole = divmod(whole, int(size))
        if count:
            parts.append((count, en, zh))
    if not parts:
        return "0 s" if lang == "en" else "0秒"
    shown = parts[:2]  # days and hours, or hours and minutes: enough for a dashboard
    if lang == "en":
        return " ".join(f"{n} {en}" for n, en, _ in shown)
    return "".join(f"{n}{zh}" for n, _, zh in shown)


def fen_to_yuan(fen: int | None) -> Decimal | None:
    return None if fen is None else Decimal(fen) / 100


def day_labels(
    days: Sequence[str], x_of: Callable[[int], float], *, max_labels: int = MAX_DAY_LABELS
) -> list[Label]:
    """At most ``max_labels`` day labels ("11-02"), evenly spaced, the last day always."""
    if not days:
        return []
    step = max(1, math.ceil(len(days) / max(1, max_labels)))
    chosen = [i for i in range(len(days)) if i % step == 0]
    if chosen[-1] != len(days) - 1 and len(days) - 1 - chosen[-1] >= step / 2:
        chosen.append(len(days) - 1)
    return [Label(x_of(i), days[i][5:]) for i in chosen]


def _ticks(upper: float, lower: float, top: float, label: Callable[[float], str]) -> list[Tick]:
    """Five ticks, 0 to ``top``, from the plot's ``lower`` edge up to its ``upper`` one."""
    return [Tick(lower - (lower - upper) * k / 4, label(top * k / 4)) for k in range(5)]


# --- the charts -------------------------------------------------------------------------


def _frame(chart_id: str, width: int, height: int) -> Chart:
    return Chart(
        chart_id,
        width=width,
        height=height,
        right=width - RIGHT,
        bottom=height - BOTTOM,
    )


def bar_chart(
    chart_id: str,
    days: Sequence[str],
    values: Sequence[float],
    *,
    label: Callable[[float], str],
    titles: Sequence[str],
    css: str = "bar",
    width: int = WIDTH,
    height: int = HEIGHT,
) -> Chart:
    """One bar per day (``values`` in the axis' unit), scaled to a nice maximum; a
    narrower ``width`` for charts side by side keeps their lettering the same size."""
    base = _frame(chart_id, width, height)
    top = nice_max(max(values, default=0.0))
    slot = (base.right - base.left) / max(1, len(days))
    bar_width = max(1.0, slot * 0.7)
    plot = base.bottom - base.top

    def x_of(i: int) -> float:
        return base.left + slot * (i + 0.5)

    bars = [
        Bar(
            x=round(x_of(i) - bar_width / 2, 2),
            y=round(base.bottom - plot * v / top, 2),
            width=round(bar_width, 2),
            height=round(plot * v / top, 2),
            css=css,
            title=titles[i],
        )
        for i, v in enumerate(values)
        if v > 0
    ]
    return replace(
        base,
        y_ticks=_ticks(base.top, base.bottom, top, label),
        x_labels=day_labels(days, x_of, max_labels=MAX_DAY_LABELS * width // WIDTH),
        bars=bars,
    )


def line_chart(
    chart_id: str,
    days: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None], Sequence[str]]],
    *,
    label: Callable[[float], str],
) -> Chart:
    """Lines (css class, a value or None per day, a title per day): None breaks the line,
    every value gets a dot (a day alone between gaps is still seen)."""
    base = Chart(chart_id)
    top = nice_max(max((v for _, vs, _ in series for v in vs if v is not None), default=0.0))
    slot = (base.right - base.left) / max(1, len(days))
    height = base.bottom - base.top

    def x_of(i: int) -> float:
        return base.left + slot * (i + 0.5)

    lines: list[Line] = []
    for css, values, titles in series:
        segments: list[str] = []
        current: list[str] = []
        dots: list[tuple[float, float, str]] = []
        for i, v in enumerate(values):
            if v is None:
                if current:
                    segments.append(" ".join(current))
                current = []
                continue
            x, y = round(x_of(i), 2), round(base.bottom - height * v / top, 2)
            current.append(f"{x},{y}")
            dots.append((x, y, titles[i]))
        if current:
            segments.append(" ".join(current))
        lines.append(Line(css, [s for s in segments if " " in s], dots))
    return Chart(
        chart_id,
        y_ticks=_ticks(base.top, base.bottom, top, label),
        x_labels=day_labels(days, x_of),
        lines=lines,
    )


@dataclass(frozen=True)
class BurnNow:
    """A fund's figures now, in yuan (the last column of its chart)."""

    budget: float | None
    paid: float
    in_flight: float
    reserved: float


def burn_chart(
    chart_id: str,
    days: Sequence[str],
    cumulative_paid: Sequence[float],
    budgets: Sequence[float | None],
    now: BurnNow,
    *,
    label: Callable[[float], str],
    titles: Sequence[str],
    now_label: str,
    now_titles: tuple[str, str, str],
) -> Chart:
    """Cumulative paid per day as bars, the budget of each day as a step line, and a "now"
    column apart: paid, in flight (committed, not arrived) and reserved stacked, with the
    budget line carried over it. An uncapped fund has no budget line."""
    base = Chart(chart_id)
    n = len(days)
    stacked = now.paid + now.in_flight + now.reserved
    top = nice_max(
        max(
            [*cumulative_paid, stacked, *(b for b in budgets if b is not None)]
            + ([now.budget] if now.budget is not None else []),
            default=0.0,
        )
    )
    slot = (base.right - base.left) / (n + NOW_GAP + 1)
    width = max(1.0, slot * 0.7)
    height = base.bottom - base.top

    def x_of(i: int) -> float:
        return base.left + slot * (i + 0.5)

    def y_of(value: float) -> float:
        return round(base.bottom - height * value / top, 2)

    bars = [
        Bar(
            x=round(x_of(i) - width / 2, 2),
            y=y_of(v),
            width=round(width, 2),
            height=round(height * v / top, 2),
            css="bar paid",
            title=titles[i],
        )
        for i, v in enumerate(cumulative_paid)
        if v > 0
    ]
    now_x = base.left + slot * (n + NOW_GAP + 0.5)
    floor = 0.0
    for value, css, title in zip(
        (now.paid, now.in_flight, now.reserved),
        ("bar paid", "bar in-flight", "bar reserved"),
        now_titles,
        strict=True,
    ):
        if value > 0:
            bars.append(
                Bar(
                    x=round(now_x - width / 2, 2),
                    y=y_of(floor + value),
                    width=round(width, 2),
                    height=round(height * value / top, 2),
                    css=css,
                    title=title,
                )
            )
        floor += value
    # The budget as a step line: flat across each day's slot, a step where it changed.
    segments: list[str] = []
    points: list[str] = []
    edges = [(base.left + slot * i, base.left + slot * (i + 1), b) for i, b in enumerate(budgets)]
    edges.append((base.left + slot * (n + NOW_GAP), base.right, now.budget))
    for start, end, budget in edges:
        if budget is None:
            if points:
                segments.append(" ".join(points))
            points = []
            continue
        points += [f"{round(start, 2)},{y_of(budget)}", f"{round(end, 2)},{y_of(budget)}"]
    if points:
        segments.append(" ".join(points))
    lines = [Line("budget", segments, [])] if segments else []
    labels = [*day_labels(days, x_of), Label(round(now_x, 2), now_label)]
    return Chart(
        chart_id,
        y_ticks=_ticks(base.top, base.bottom, top, label),
        x_labels=labels,
        bars=bars,
        lines=lines,
    )
