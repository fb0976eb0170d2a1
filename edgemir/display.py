"""The live terminal display (rich): tuner, chords, onsets, drum grid, instrument, level, status,
and a banner while the input device is away. Sized for an 80×24 terminal.

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
from edgemir.labels import DRUM_CLASSES, note_name, tuning

GRID = 32  # drum grid columns, 100 ms each


class Dashboard:
    def __init__(self, title: str, tasks: list[str], a4: float = 440.0) -> None:
        self.title = title
        self.a4 = a4  # the tuner's reference
        self.tasks = tasks
        self.pitch: Event | None = None
        self.chords: deque[str] = deque(maxlen=6)
        self.onsets: deque[float] = deque(maxlen=200)
        self.last_onset_wall = 0.0
        self.drums: deque[tuple[float, str]] = deque(maxlen=400)
        self.instrument: Event | None = None
        self.now_t = 0.0
        self.messages: deque[tuple[float, str]] = deque(maxlen=2)
        self.stage = "starting"  # shown until the first status arrives
        self.lock = threading.Lock()

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
            if e.task == "pitch":
                self.pitch = e
            elif e.task == "chord":
                if not self.chords or self.chords[-1] != e.value:
                    self.chords.append(str(e.value))
            elif e.task == "onset":
                self.onsets.append(e.t)
                self.last_onset_wall = time.perf_counter()
            elif e.task == "drums":
                self.drums.append((e.t, str(e.value)))
            elif e.task == "instrument":
                self.instrument = e

    def _tuner(self) -> Panel:
        e = self.pitch
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

    def _chords(self) -> Panel:
        cur = self.chords[-1] if self.chords else "—"
        prev = "  ".join(list(self.chords)[:-1][-4:])
        return Panel(Text.assemble((f"{cur}\n", "bold cyan"), (prev, "dim")), title="chord", height=4)

    def _onsets(self) -> Panel:
        flash = time.perf_counter() - self.last_onset_wall < 0.15
        rate = sum(1 for t in self.onsets if t > self.now_t - 5) / 5.0
        return Panel(Text.assemble(("●" if flash else "○", "bold red" if flash else "dim"), f"  {rate:.1f}/s"),
                     title="onsets", height=3)

    def _drums(self) -> Panel:
        t_end = self.now_t
        rows = []
        for c in DRUM_CLASSES:
            cells = [" "] * GRID
            for t, cls in self.drums:
                k = GRID - 1 - int((t_end - t) / 0.1)
                if cls == c and 0 <= k < GRID:
                    cells[k] = "■"
            rows.append(Text(f"{c:>5} " + "".join(cells)))
        return Panel(Group(*rows), title="drums", height=5)

    def _instrument(self) -> Panel:
        e = self.instrument
        if e is None:
            return Panel(Text("—", style="dim"), title="instrument", height=3)
        bar = "█" * int(e.confidence * 10)
        return Panel(Text.assemble((f"{e.value:<11}", "bold magenta"), f"{bar:<10} {e.confidence:.2f}"),
                     title="instrument", height=3)

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
        left = [self._tuner() if "pitch" in self.tasks else None, self._chords() if "chord" in self.tasks else None]
        right = [self._onsets() if "onset" in self.tasks else None,
                 self._instrument() if "instrument" in self.tasks else None]
        grid.add_row(Group(*[p for p in left if p]), Group(*[p for p in right if p]))
        parts = [Text(self.title, style="bold")]
        lost = status.get("lost_for")
        if lost is not None:
            parts.append(Text(f" INPUT DEVICE LOST {lost:5.1f} s — retrying every {status.get('retry_s', 0.5):g} s ",
                              style="bold white on red"))
        parts.append(grid)
        if "drums" in self.tasks:
            parts.append(self._drums())
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
