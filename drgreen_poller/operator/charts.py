"""The operator page's two charts as inline SVG: events per hour, and delivery latency per hour.

Owns the hourly bucketing (pure functions of the rows and ``now``) and the drawing; every label
is escaped. No I/O, no scripts: the SVG is part of the HTML the server sends.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape

from drgreen_poller.store.operator_views import DeliveredRow

HOURS = 24
_WIDTH, _HEIGHT = 720, 180
_LEFT, _BOTTOM, _TOP = 64, 30, 16


@dataclass(frozen=True, slots=True)
class Bar:
    """One hour of a chart: its label, its value and, for latency, a second (higher) value."""

    hour: str  # "2026-11-23T10" (UTC)
    value: float
    high: float | None = None


def hour_keys(now: datetime, hours: int = HOURS) -> list[str]:
    """The last ``hours`` UTC hours up to ``now``'s, oldest first, as ``YYYY-MM-DDTHH``."""
    top = now.replace(minute=0, second=0, microsecond=0)
    return [(top - timedelta(hours=n)).strftime("%Y-%m-%dT%H") for n in range(hours - 1, -1, -1)]


def events_bars(per_hour: Mapping[str, int], now: datetime) -> list[Bar]:
    """One bar per hour of the last day (0 where nothing happened)."""
    return [Bar(hour, float(per_hour.get(hour, 0))) for hour in hour_keys(now)]


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile of sorted ``values``."""
    rank = max(0, min(len(values) - 1, math.ceil(share * len(values)) - 1))
    return values[rank]


def latency_bars(rows: Iterable[DeliveredRow], now: datetime) -> list[Bar]:
    """Per hour of the last day: the median (value) and 95th percentile (high) of seconds from
    an outbox row's creation to the end of its successful attempt."""
    by_hour: dict[str, list[float]] = {}
    for row in rows:
        started = _parse(row.started_at)
        seconds = (started - _parse(row.created_at)).total_seconds() + row.duration_ms / 1000
        by_hour.setdefault(started.strftime("%Y-%m-%dT%H"), []).append(max(0.0, seconds))
    bars = []
    for hour in hour_keys(now):
        values = sorted(by_hour.get(hour, []))
        if values:
            bars.append(Bar(hour, _percentile(values, 0.5), _percentile(values, 0.95)))
        else:
            bars.append(Bar(hour, 0.0))
    return bars


def _nice_top(value: float) -> float:
    """The smallest 1, 2 or 5 × 10^n at or above ``value`` (1 for nothing)."""
    if value <= 0:
        return 1.0
    step = 10.0 ** int(f"{value:e}".split("e")[1])  # value = m × step, 1 ≤ m < 10
    return next((f * step for f in (1, 2, 5) if value <= f * step), 10 * step)


def _number(value: float, unit: str) -> str:
    if unit == "s" and value < 1:
        return f"{value * 1000:.0f} ms"
    text = f"{value:.1f}".removesuffix(".0") if value < 10 else f"{value:,.0f}"
    return f"{text} {unit}".strip()


def bar_chart(title: str, bars: Sequence[Bar], unit: str = "") -> str:
    """An SVG bar chart: one bar per hour, a thinner darker mark for ``high`` where given, the
    axis maximum on the left and every sixth hour below, ending with the last."""
    top = _nice_top(max((max(b.value, b.high or 0) for b in bars), default=0))
    plot_w, plot_h = _WIDTH - _LEFT - 8, _HEIGHT - _BOTTOM - _TOP
    slot = plot_w / max(1, len(bars))
    parts = [
        f'<svg class="chart" viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img"'
        f' aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_WIDTH - 8}" y2="{_TOP}" class="grid"/>',
        f'<line x1="{_LEFT}" y1="{_TOP + plot_h}" x2="{_WIDTH - 8}" y2="{_TOP + plot_h}"'
        ' class="axis"/>',
        f'<text x="{_LEFT - 6}" y="{_TOP + 4}" class="tick" text-anchor="end">'
        f"{escape(_number(top, unit))}</text>",
        f'<text x="{_LEFT - 6}" y="{_TOP + plot_h}" class="tick" text-anchor="end">0</text>',
    ]
    for index, bar in enumerate(bars):
        # Every sixth hour is labelled, counting back from the last (the hour now).
        labelled = (len(bars) - 1 - index) % 6 == 0
        parts.extend(_bar(index, bar, slot, plot_h, top, unit, labelled=labelled))
    parts.append("</svg>")
    return "".join(parts)


def _bar(
    index: int, bar: Bar, slot: float, plot_h: float, top: float, unit: str, *, labelled: bool
) -> list[str]:
    x = _LEFT + index * slot
    height = plot_h * bar.value / top
    label = f"{bar.hour[11:13]}:00 UTC: {_number(bar.value, unit)}"
    if bar.high is not None:
        label += f" median, {_number(bar.high, unit)} p95"
    out = [
        f'<rect x="{x + 2:.1f}" y="{_TOP + plot_h - height:.1f}" width="{slot - 4:.1f}"'
        f' height="{height:.1f}" class="bar"><title>{escape(label)}</title></rect>'
    ]
    if bar.high is not None:
        high_y = _TOP + plot_h - plot_h * bar.high / top
        out.append(
            f'<line x1="{x + 2:.1f}" y1="{high_y:.1f}" x2="{x + slot - 2:.1f}" y2="{high_y:.1f}"'
            ' class="high"/>'
        )
    if labelled:
        out.append(
            f'<text x="{x + slot / 2:.1f}" y="{_HEIGHT - 10}" class="tick"'
            f' text-anchor="middle">{escape(bar.hour[11:13])}:00</text>'
        )
    return out
