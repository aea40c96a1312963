"""Memory and load from telemetry.jsonl: a gauge and a sparkline, GPU or CPU-only.

The question this panel answers is "how close to OOM am I?", so memory comes first; on a
machine without a GPU the same panel shows RAM and CPU load instead.
"""

from __future__ import annotations

from collections import deque

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Label, Sparkline, Static

KEEP = 600  # ten minutes at one sample a second


def gauge(used: float, total: float, width: int = 30) -> Text:
    """`██████░░░░ 6.1/12.0 GiB 51%`, red past 90% (the OOM zone)."""
    frac = 0.0 if total <= 0 else max(0.0, min(1.0, used / total))
    filled = round(frac * width)
    colour = "red" if frac >= 0.9 else "yellow" if frac >= 0.75 else "green"
    t = Text()
    t.append("█" * filled, style=colour)
    t.append("░" * (width - filled), style="dim")
    t.append(f" {used:.1f}/{total:.1f} GiB {frac * 100:.0f}%")
    return t


def memory_of(rec: dict) -> tuple[str, float | None, float | None]:
    """(label, used GiB, total GiB) of the device that matters for this sample."""
    gpu = rec.get("gpu")
    if gpu:
        return f"GPU {gpu.get('name') or ''}".strip(), gpu.get("used_gb"), gpu.get("total_gb")
    return "RAM", rec.get("ram_used_gb"), rec.get("ram_total_gb")


class GpuPanel(Vertical):
    DEFAULT_CSS = """
    GpuPanel { height: auto; }
    GpuPanel Sparkline { height: 3; margin-bottom: 1; }
    GpuPanel .gpu-label { color: $text-muted; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.records: deque[dict] = deque(maxlen=KEEP)

    def compose(self) -> ComposeResult:
        yield Static("no telemetry yet (written about once a second while the run is running)", id="gpu-gauge")
        yield Label("memory, last 10 min", classes="gpu-label")
        yield Sparkline([], id="gpu-mem-spark")
        yield Static("", id="gpu-load")
        yield Label("load %, last 10 min", classes="gpu-label")
        yield Sparkline([], id="gpu-load-spark")

    def add(self, records: list[dict]) -> None:
        if not records:
            return
        self.records.extend(records)
        last = self.records[-1]
        label, used, total = memory_of(last)
        head = Text(f"{label}\n", style="bold")
        if used is not None and total:
            head.append_text(gauge(float(used), float(total)))
        else:
            head.append("memory not reported", style="dim")
        if last.get("proc_gpu_gb") is not None:
            head.append(f"\nthis run: {last['proc_gpu_gb']:.2f} GiB")
        if last.get("rss_gb") is not None:
            head.append(f"\nworker RSS: {last['rss_gb']:.2f} GiB")
        self.query_one("#gpu-gauge", Static).update(head)
        mems = [memory_of(r)[1] or 0.0 for r in self.records]
        self.query_one("#gpu-mem-spark", Sparkline).data = mems
        gpu = last.get("gpu")
        if gpu:
            loads = [((r.get("gpu") or {}).get("util_percent") or 0.0) for r in self.records]
            load = f"GPU utilisation {gpu.get('util_percent') if gpu.get('util_percent') is not None else '?'}%"
            if last.get("cpu_percent") is not None:
                load += f"   CPU {last['cpu_percent']:.0f}%"
        else:
            loads = [r.get("cpu_percent") or 0.0 for r in self.records]
            load = f"CPU {last.get('cpu_percent', 0) or 0:.0f}% (no GPU: CPU-only run)"
        self.query_one("#gpu-load", Static).update(load)
        self.query_one("#gpu-load-spark", Sparkline).data = loads
