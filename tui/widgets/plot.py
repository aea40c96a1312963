"""A line plot in braille characters: loss and WER against step, no plotting dependency.

Each terminal cell holds a 2x4 grid of braille dots, so an 80x20 panel gives a 160x80 dot
canvas: enough to read a loss curve over SSH. `render_braille` is pure (tested alone);
the widget only adds axis labels, a legend and colours.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

# Dot bit for (column 0..1, row 0..3) inside one braille cell (Unicode braille patterns).
_DOTS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))
PALETTE = ("dodger_blue1", "orange1", "green3", "magenta", "yellow", "cyan", "red", "white")


@dataclass
class Series:
    name: str
    points: list[tuple[float, float]]
    color: str = ""


def bounds(series: list[Series]) -> tuple[float, float, float, float] | None:
    xs = [x for s in series for x, _ in s.points]
    ys = [y for s in series for _, y in s.points]
    if not xs:
        return None
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:  # one evaluation, or a flat curve: a band of ±10% around it
        pad = abs(y0) * 0.1 or 0.5
        y0, y1 = y0 - pad, y1 + pad
        if min(ys) >= 0:  # a WER or a loss never goes below 0 (one eval at 31% drew an axis down to -19%)
            y0 = max(0.0, y0)
    return x0, x1, y0, y1


def render_braille(
    series: list[Series], width: int, height: int, box: tuple[float, float, float, float]
) -> list[list[tuple[str, int | None]]]:
    """A height x width grid of (character, index of the series that drew last or None).

    Consecutive points are joined with straight dot lines so sparse evaluations still read
    as a curve.
    """
    x0, x1, y0, y1 = box
    dw, dh = width * 2, height * 4
    bits = [[0] * width for _ in range(height)]
    owner: list[list[int | None]] = [[None] * width for _ in range(height)]

    def dot(px: int, py: int, idx: int) -> None:
        if 0 <= px < dw and 0 <= py < dh:
            cy, cx = py // 4, px // 2
            bits[cy][cx] |= _DOTS[py % 4][px % 2]
            owner[cy][cx] = idx

    def to_dot(x: float, y: float) -> tuple[int, int]:
        px = round((x - x0) / (x1 - x0) * (dw - 1))
        py = round((y1 - y) / (y1 - y0) * (dh - 1))
        return px, py

    for idx, s in enumerate(series):
        pts = sorted(s.points)
        if len(pts) > dw * 4:  # more points than dots: thin them, keeping the newest
            stride = len(pts) // (dw * 2)
            pts = pts[::stride] + [pts[-1]]
        prev = None
        for x, y in pts:
            cur = to_dot(x, y)
            if prev is None:
                dot(*cur, idx)
            else:
                steps = max(abs(cur[0] - prev[0]), abs(cur[1] - prev[1]), 1)
                for i in range(1, steps + 1):
                    dot(round(prev[0] + (cur[0] - prev[0]) * i / steps), round(prev[1] + (cur[1] - prev[1]) * i / steps), idx)
            prev = cur
    return [[(chr(0x2800 + b) if b else " ", owner[r][c]) for c, b in enumerate(row)] for r, row in enumerate(bits)]


def _label(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000 or abs(v) < 0.01:
        return f"{v:.1e}"
    return f"{v:.3g}"


class Plot(Widget):
    """Several series on shared axes, y labels on the left, step range and legend below."""

    DEFAULT_CSS = """
    Plot { height: 1fr; min-height: 5; }
    """

    series: reactive[list[Series]] = reactive(list, always_update=True)

    def __init__(self, title: str = "", percent: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.title = title
        self.percent = percent
        self.empty = "no data yet"  # what an empty plot says

    def set_series(self, series: list[Series]) -> None:
        self.series = [Series(s.name, s.points, s.color or PALETTE[i % len(PALETTE)]) for i, s in enumerate(series)]

    def _fmt(self, v: float) -> str:
        return f"{v * 100:.1f}%" if self.percent else _label(v)

    def render(self) -> Text:
        width, height = self.size.width, self.size.height
        out = Text(no_wrap=True, overflow="crop")
        if self.title:
            out.append(self.title + "\n", style="bold")
            height -= 1
        series = [s for s in self.series if s.points]
        box = bounds(series)
        if box is None or height < 3 or width < 12:
            out.append(self.empty if box is None else "(too small)", style="dim")
            return out
        x0, x1, y0, y1 = box
        labels = [self._fmt(y1), self._fmt((y0 + y1) / 2), self._fmt(y0)]
        lw = max(len(label) for label in labels) + 1
        ph, pw = height - 2, width - lw - 1
        grid = render_braille(series, pw, ph, box)
        label_rows = {0: labels[0], ph // 2: labels[1], ph - 1: labels[2]}
        for r, row in enumerate(grid):
            out.append(label_rows.get(r, "").rjust(lw - 1) + " ┤", style="dim")
            for ch, idx in row:
                out.append(ch, style=series[idx].color if idx is not None else "")
            out.append("\n")
        axis = f"{int(x0)}".ljust(pw // 2) + f"step {int(x1)}".rjust(pw - pw // 2)
        out.append(" " * (lw + 1) + axis + "\n", style="dim")
        for s in series:
            last = s.points[-1][1] if s.points else None
            out.append("━ ", style=s.color)
            out.append(f"{s.name} {self._fmt(last) if last is not None else ''}  ")
        return out
