"""The live terminal display (rich): tuner, chords, onsets, drum grid, instrument, level, status,
and a banner while the input device is away. Sized for an 80×24 terminal. Each task's panel follows
its format (edgemir/tasks.py): f0 a tuner, segments the recent labels, times a flash and a rate,
events a grid per class, label the current label.

The worker thread calls ``update`` and ``log``; rich's refresh thread calls ``render``: a lock keeps
the two apart, and rendering never runs on the audio path."""

from __future__ import annotations

import threading
import time
from collections import deque

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from edgemir.decoders import Event
from edgemir.labels import note_name, tuning
from edgemir.tasks import REGISTRY

GRID = 32  # drum grid columns, 100 ms each


class Dashboard:
    def __init__(self, title: str, tasks: list[str], a4: float = 440.0) -> None:
        self.title = title
        self.a4 = a4  # the tuner's reference
        self.lock = threading.Lock()
        self.tasks = tasks
        self.now_t = 0.0
        self.messages: deque[tuple[float, str]] = deque(maxlen=2)
        self.stage = "starting"  # shown until the first status arrives

    @property
    def tasks(self) -> list[str]:
        return self._tasks

    @tasks.setter
    def tasks(self, tasks: list[str]) -> None:
        """The tasks shown (set once the models are loaded): one panel each, by its format."""
        with self.lock:
            self._set_tasks(tasks)

    def _set_tasks(self, tasks: list[str]) -> None:
        self._tasks = list(tasks)
        self.format = {t: REGISTRY[t].format for t in tasks if t in REGISTRY}
        self.last: dict[str, Event] = {}  # f0 and label tasks: the newest event
        self.labels: dict[str, deque[str]] = {t: deque(maxlen=6) for t, f in self.format.items() if f == "segments"}
        self.times: dict[str, deque[float]] = {t: deque(maxlen=200) for t, f in self.format.items() if f == "times"}
        self.flash: dict[str, float] = {}  # times tasks: wall clock of the newest event
        self.hits: dict[str, deque[tuple[float, str]]] = {t: deque(maxlen=400) for t, f in self.format.items()
                                                          if f == "events"}

    def log(self, msg: str) -> None:
        """A message for the musician (device lost, re-opened, ...): shown on the display."""
        with self.lock:
            self.messages.append((time.time(), msg))

    def update(self, events: list[Event]) -> None:
        with self.lock:
            self._update(events)

    def _update(self, events: list[Event]) -> None:
        for e in events:
            self.now_t = max(self.now_t, e.t)
            fmt = self.format.get(e.task)
            if fmt in ("f0", "label"):
                self.last[e.task] = e
            elif fmt == "segments":
                if not self.labels[e.task] or self.labels[e.task][-1] != e.value:
                    self.labels[e.task].append(str(e.value))
            elif fmt == "times":
                self.times[e.task].append(e.t)
                self.flash[e.task] = time.perf_counter()
            elif fmt == "events":
                self.hits[e.task].append((e.t, str(e.value)))

    def _panel(self, task: str) -> Panel:
        return {"f0": self._tuner, "segments": self._segments, "times": self._times, "events": self._grid,
                "label": self._label}[self.format[task]](task)

    def _tuner(self, task: str) -> Panel:
        e = self.last.get(task)
        if e is None or e.value <= 0:
            body = Text("  —  (unvoiced)", style="dim")
        else:
            midi, cents = tuning(e.value, self.a4)
            pos = int(round((cents + 50) / 100 * 30))
            needle = "".join("●" if i == pos else ("|" if i == 15 else "─") for i in range(31))
            style = "green" if abs(cents) < 5 else "yellow"
            body = Text.assemble((f"{note_name(midi):>4} ", "bold " + style), (f"{cents:+5.1f}c ", style),
                                 (f"{e.value:7.1f} Hz ", ""), (f"conf {e.confidence:.2f}\n", "dim"), (needle, style))
        return Panel(body, title="tuner" if self.a4 == 440.0 else f"tuner  A4 = {self.a4:g} Hz", height=4)

    def _segments(self, task: str) -> Panel:
        seen = self.labels[task]
        cur = seen[-1] if seen else "—"
        prev = "  ".join(list(seen)[:-1][-4:])
        return Panel(Text.assemble((f"{cur}\n", "bold cyan"), (prev, "dim")), title=task, height=4)

    def _times(self, task: str) -> Panel:
        flash = time.perf_counter() - self.flash.get(task, 0.0) < 0.15
        rate = sum(1 for t in self.times[task] if t > self.now_t - 5) / 5.0
        return Panel(Text.assemble(("●" if flash else "○", "bold red" if flash else "dim"), f"  {rate:.1f}/s"),
                     title=task, height=3)

    def _grid(self, task: str) -> Panel:
        t_end = self.now_t
        rows = []
        classes = REGISTRY[task].classes
        for c in classes:
            cells = [" "] * GRID
            for t, cls in self.hits[task]:
                k = GRID - 1 - int((t_end - t) / 0.1)
                if cls == c and 0 <= k < GRID:
                    cells[k] = "■"
            rows.append(Text(f"{c:>5} " + "".join(cells)))
        return Panel(Group(*rows), title=task, height=2 + len(classes))

    def _label(self, task: str) -> Panel:
        e = self.last.get(task)
        if e is None:
            return Panel(Text("—", style="dim"), title=task, height=3)
        bar = "█" * int(e.confidence * 10)
        return Panel(Text.assemble((f"{e.value:<11}", "bold magenta"), f"{bar:<10} {e.confidence:.2f}"),
                     title=task, height=3)

    def render(self, status: dict | None):
        with self.lock:
            if status is None:
                return Group(Text(self.title, style="bold"), Text(f"{self.stage} …", style="yellow"),
                             *self._message_lines())
            return self._render(status)

    def _message_lines(self) -> list[Text]:
        return [Text(time.strftime("%H:%M:%S ", time.localtime(t)) + m, style="yellow", overflow="ellipsis",
                     no_wrap=True) for t, m in self.messages]

    def _render(self, status: dict):
        lv = status.get("level_db", -120.0)
        n = max(0, min(30, int((lv + 80) / 80 * 30)))
        flags = ""
        if status.get("clipped"):
            flags += f"  clipped {status['clipped']}"
        if status.get("nonfinite"):
            flags += f"  NaN/inf {status['nonfinite']}"
        meter = Text.assemble(("level ", "dim"), ("█" * n, "green" if lv < -6 else "red"), (" " * (30 - n)),
                              f" {lv:6.1f} dB", (flags, "bold red"))
        grid = Table.grid(expand=True)
        grid.add_column(ratio=1)
        grid.add_column(ratio=1)
        # tuner and segments on the left, flashes and labels on the right, event grids below, in registry order
        order = [t for t in REGISTRY if t in self.format]
        cols = [[self._panel(t) for f in fs for t in order if self.format[t] == f]
                for fs in (("f0", "segments"), ("times", "label"))]
        grid.add_row(Group(*cols[0]), Group(*cols[1]))
        parts = [Text(self.title, style="bold")]
        lost = status.get("lost_for")
        if lost is not None:
            parts.append(Text(f" INPUT DEVICE LOST {lost:5.1f} s — retrying every {status.get('retry_s', 0.5):g} s ",
                              style="bold white on red"))
        parts.append(grid)
        parts.extend(self._panel(t) for t in order if self.format[t] == "events")
        parts.append(meter)
        if status.get("hops", 0) == 0 or status["latency_p50_ms"] != status["latency_p50_ms"]:  # nan: none yet
            lat = "latency warming up"
        else:
            lat = f"latency {status['latency_p50_ms']:.0f}/{status['latency_p99_ms']:.0f} ms"
        block = ("block —" if status["compute_p50_ms"] != status["compute_p50_ms"] else
                 f"block {status['compute_p50_ms']:.1f}/{status['compute_p99_ms']:.1f} ms")
        cpu = "CPU —" if status["cpu_percent"] != status["cpu_percent"] else f"CPU {status['cpu_percent']:.0f}%"
        # p50/p99 throughout; one line of at most 80 columns
        parts.append(Text(f"{block} | {lat} | {cpu} | xruns {status['xruns']}, gaps {status['gap_s']:.1f} s",
                          style="dim", no_wrap=True, overflow="ellipsis"))
        parts.extend(self._message_lines())
        return Group(*parts)


class Redraw(threading.Thread):
    """Redraws a rich ``Live`` ten times a second from its own thread, off the audio path. Unlike rich's
    own refresh thread it is joined when stopped: a daemon thread still drawing while the interpreter
    exits was killed inside native code ("terminate called without an active exception")."""

    def __init__(self, live, render, hz: float = 10.0) -> None:
        super().__init__(name="edgemir-display", daemon=True)
        self.live, self.render, self.period = live, render, 1.0 / hz
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.period):
            try:
                self.live.update(self.render(), refresh=True)
            except Exception:  # a frame that cannot be drawn is skipped, never the analysis
                pass

    def stop(self) -> None:
        self.done.set()
        if self.is_alive():
            self.join(5)
