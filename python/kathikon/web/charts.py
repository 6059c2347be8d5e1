"""The overview's charts: ``app.metrics`` for the last hour or day, one queue or all, drawn as
inline SVG on the server (no chart library, no script: the page's policy allows none, and
it works offline).

One chart per metric: jobs completed, attempts failed (to be retried), jobs discarded, jobs
cancelled (bars), and attempt durations (p50, p95 and p99 lines). The last hour shows each
minute; the last day, quarter hours. A bucket of several minutes or queues sums the counts
and shows the largest of their percentiles (percentiles cannot be merged exactly; the
largest is an upper bound, the one that matters when looking for slow jobs).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Optional

from markupsafe import Markup, escape

from ..metrics import MetricPoint

#: The windows the overview offers: (name, label, span, bucket).
WINDOWS = {
    "hour": ("last hour", timedelta(hours=1), timedelta(minutes=1)),
    "day": ("last day", timedelta(hours=24), timedelta(minutes=15)),
}
DEFAULT_WINDOW = "hour"
COUNTS = (
    ("completed", "completed"),
    ("failed", "failed (retried)"),
    ("discarded", "discarded"),
    ("cancelled", "cancelled"),
)
PERCENTILES = ("p50", "p95", "p99")

# The drawing's size in SVG units; it scales to the page's width.
WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 600.0, 120.0, 44.0, 16.0, 6.0


@dataclass
class Bucket:
    start: datetime
    counts: dict[str, int]
    durations: dict[str, Optional[float]]


@dataclass(frozen=True)
class Chart:
    metric: str
    """``completed``, ``failed``, ``discarded``, ``cancelled`` or ``duration``."""
    title: str
    total: str
    """The window's total (counts) or largest p95 (durations), as shown."""
    svg: Markup


def buckets(
    points: list[MetricPoint], end: datetime, span: timedelta, size: timedelta
) -> list[Bucket]:
    """The window ending with ``end``'s bucket, cut in ``size`` buckets, with ``points``
    (any queues) added into the bucket of their minute."""
    epoch = datetime(1970, 1, 1, tzinfo=end.tzinfo)
    last = epoch + ((end - epoch) // size) * size
    n = max(1, span // size)
    first = last - (n - 1) * size
    out = [
        Bucket(first + i * size, {k: 0 for k, _ in COUNTS}, dict.fromkeys(PERCENTILES))
        for i in range(n)
    ]
    for p in points:
        i = (p.minute - first) // size
        if not 0 <= i < n:
            continue
        b = out[i]
        for key, _ in COUNTS:
            b.counts[key] += getattr(p, key)
        for key in PERCENTILES:
            value = getattr(p, key)
            if value is not None:
                seen = b.durations[key]
                b.durations[key] = value if seen is None else max(seen, value)
    return out


def _hhmm(at: datetime) -> str:
    return at.strftime("%H:%M")


def _seconds(value: float) -> str:
    if value >= 1:
        return f"{value:.3g} s"
    return f"{value * 1000:.3g} ms"


def _frame(top_label: str, series: list[Bucket]) -> list[str]:
    x_end = WIDTH
    base = HEIGHT - BOTTOM
    return [
        f'<line class="axis" x1="{LEFT}" y1="{base}" x2="{x_end}" y2="{base}"/>',
        f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{base}"/>',
        f'<text class="label" x="{LEFT - 4}" y="{TOP + 8}" text-anchor="end">'
        f"{escape(top_label)}</text>",
        f'<text class="label" x="{LEFT - 4}" y="{base}" text-anchor="end">0</text>',
        f'<text class="label" x="{LEFT}" y="{HEIGHT - 2}">{_hhmm(series[0].start)}</text>',
        f'<text class="label" x="{x_end}" y="{HEIGHT - 2}" text-anchor="end">'
        f"{_hhmm(series[-1].start)} UTC</text>",
    ]


def _svg(metric: str, title: str, body: list[str]) -> Markup:
    return Markup(
        f'<svg class="chart" id="chart-{metric}" data-metric="{metric}" role="img" '
        f'viewBox="0 0 {WIDTH:g} {HEIGHT:g}" preserveAspectRatio="none" '
        f'aria-label="{escape(title)}">' + "".join(body) + "</svg>"
    )


def count_chart(metric: str, title: str, series: list[Bucket]) -> Chart:
    values = [b.counts[metric] for b in series]
    top = max(values) or 1
    step = (WIDTH - LEFT) / len(series)
    base = HEIGHT - BOTTOM
    body = _frame(str(top), series)
    for i, (b, v) in enumerate(zip(series, values)):
        if not v:
            continue
        h = (base - TOP) * v / top
        body.append(
            f'<rect class="bar bar-{metric}" x="{LEFT + i * step:.2f}" y="{base - h:.2f}" '
            f'width="{max(step - 1, 0.5):.2f}" height="{h:.2f}">'
            f"<title>{_hhmm(b.start)} UTC: {v} {escape(title)}</title></rect>"
        )
    return Chart(metric, title, str(sum(values)), _svg(metric, title, body))


def duration_chart(series: list[Bucket]) -> Chart:
    title = "attempt duration (p50, p95, p99)"
    seen = [v for b in series for v in b.durations.values() if v is not None]
    top = max(seen, default=0.0) or 1.0
    step = (WIDTH - LEFT) / len(series)
    base = HEIGHT - BOTTOM
    body = _frame(_seconds(top) if seen else "", series)
    for key in PERCENTILES:
        points = [
            f"{LEFT + (i + 0.5) * step:.2f},{base - (base - TOP) * v / top:.2f}"
            for i, b in enumerate(series)
            if (v := b.durations[key]) is not None
        ]
        if points:
            body.append(f'<polyline class="line line-{key}" points="{" ".join(points)}"/>')
    p95 = [v for b in series if (v := b.durations["p95"]) is not None]
    total = _seconds(max(p95)) if p95 else "-"
    return Chart("duration", title, total, _svg("duration", title, body))


def charts(points: list[MetricPoint], end: datetime, window: str) -> list[Chart]:
    """Every chart of the overview for ``window`` (a key of :data:`WINDOWS`)."""
    _, span, size = WINDOWS[window]
    series = buckets(points, end, span, size)
    out = [count_chart(metric, title, series) for metric, title in COUNTS]
    out.append(duration_chart(series))
    return out
