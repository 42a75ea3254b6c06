"""The call drawn as SVG for the admin: a talk-time bar (customer, agent,
silence as shares of the call) and a timeline (one lane per party, the
silences and the overlaps on a third). Pure: numbers in, markup out; every
text is escaped."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

COLOURS = {"customer": "#2b7bb9", "agent": "#e08a1e", "silence": "#c8c8c8", "overlap": "#c0392b"}
WIDTH = 720


def _seconds(ms: float) -> str:
    return f"{ms / 1000:.1f} s"


def talk_bar(*, talk_ms: Mapping[str, int], silence_ms: int, overlap_ms: int, duration_ms: int) -> str:
    """One bar: customer-only, both at once, agent-only and silence, as shares of the call."""
    duration = max(duration_ms, 1)
    parts = [
        ("customer", max(talk_ms.get("customer", 0) - overlap_ms, 0), "customer"),
        ("overlap", overlap_ms, "both at once"),
        ("agent", max(talk_ms.get("agent", 0) - overlap_ms, 0), "agent"),
        ("silence", silence_ms, "silence"),
    ]
    x = 0.0
    rects, legend = [], []
    for i, (key, ms, label) in enumerate(parts):
        width = WIDTH * ms / duration
        if width > 0:
            rects.append(
                f'<rect x="{x:.1f}" y="0" width="{width:.1f}" height="22" fill="{COLOURS[key]}">'
                f"<title>{escape(label)}: {_seconds(ms)} ({100 * ms / duration:.0f} %)</title></rect>"
            )
        x += width
        legend.append(
            f'<rect x="{i * 180}" y="30" width="10" height="10" fill="{COLOURS[key]}"/>'
            f'<text x="{i * 180 + 14}" y="39" font-size="11">{escape(label)} {_seconds(ms)} '
            f"({100 * ms / duration:.0f} %)</text>"
        )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="talk-bar" width="{WIDTH}" height="46" '
        f'viewBox="0 0 {WIDTH} 46" role="img" aria-label="talk time per party">'
        + "".join(rects) + "".join(legend) + "</svg>"
    )  # fmt: skip


def timeline(
    *,
    speech: Mapping[str, Sequence[Sequence[int]]],
    silences: Sequence[Sequence[int]],
    overlaps: Sequence[Sequence[int]],
    duration_ms: int,
) -> str:
    """Lanes: customer, agent, and silence/overlap, over the call's duration, with a tick every 10 s."""
    duration = max(duration_ms, 1)
    left, lane, gap = 110, 16, 6
    span = WIDTH - left

    def x(ms: float) -> float:
        return left + span * min(max(ms, 0), duration) / duration

    out = []
    lanes = [("customer", speech.get("customer", [])), ("agent", speech.get("agent", []))]
    for row, (name, intervals) in enumerate(lanes):
        y = row * (lane + gap)
        out.append(f'<text x="0" y="{y + 12}" font-size="11">{escape(name)}</text>')
        for start, end in intervals:
            out.append(
                f'<rect x="{x(start):.1f}" y="{y}" width="{max(x(end) - x(start), 0.5):.1f}" height="{lane}" '
                f'fill="{COLOURS[name]}"><title>{escape(name)} {_seconds(start)}–{_seconds(end)}</title></rect>'
            )
    y = 2 * (lane + gap)
    out.append(f'<text x="0" y="{y + 12}" font-size="11">silence / overlap</text>')
    for key, intervals in (("silence", silences), ("overlap", overlaps)):
        for start, end in intervals:
            out.append(
                f'<rect x="{x(start):.1f}" y="{y}" width="{max(x(end) - x(start), 0.5):.1f}" height="{lane}" '
                f'fill="{COLOURS[key]}"><title>{key} {_seconds(start)}–{_seconds(end)} '
                f"({_seconds(end - start)})</title></rect>"
            )
    axis = 3 * (lane + gap)
    step = 10_000 if duration <= 300_000 else 60_000
    for t in range(0, duration + 1, step):
        out.append(f'<line x1="{x(t):.1f}" y1="{axis - 2}" x2="{x(t):.1f}" y2="{axis + 3}" stroke="#555"/>')
        out.append(f'<text x="{x(t):.1f}" y="{axis + 14}" font-size="10" text-anchor="middle">{t // 1000}s</text>')
    height = axis + 18
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="call-timeline" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label="who spoke when, silences and overlaps">'
        + "".join(out) + "</svg>"
    )  # fmt: skip
