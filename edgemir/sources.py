"""Audio sources: a live input device that may come and go, or a file (streamed from disk, paced
in real time or unpaced). Down-mixing and resampling to 16 kHz happen at the source; the device
itself is captured in a child process (``edgemir.capture``) whose callback only copies samples.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edgemir.capture import ProcessDeviceSource, describe
from edgemir.frontend import N_FFT
from edgemir.labels import HOP, SAMPLE_RATE


class Source:
    """Base: ``read(n)`` returns up to n samples (empty when none yet), None at the end."""

    name = "source"
    xruns = 0
    gap_seconds = 0.0
    nonfinite = 0

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def read(self, n: int) -> np.ndarray | None:
        raise NotImplementedError

    def wait(self, timeout: float) -> None:
        """After an empty read: sleep until more audio may be there (at most ``timeout`` seconds)."""
        time.sleep(timeout)

    def arrival_time(self, sample: int) -> float | None:
        """Wall time (perf_counter) at which sample index ``sample`` arrived, if known."""
        return None

    def time_offset(self, sample: int) -> float:
        """Seconds to add to the time of an event at engine sample ``sample`` (outages before it)."""
        return 0.0


class ArrayReader:
    """The reader interface of ``AudioReader`` over samples already in memory."""

    def __init__(self, audio: np.ndarray) -> None:
        self.audio = np.asarray(audio, dtype=np.float32)
        self.duration = len(self.audio) / SAMPLE_RATE
        self.pos = 0

    def rewind(self) -> None:
        self.pos = 0

    def read(self, n: int) -> np.ndarray | None:
        if self.pos >= len(self.audio):
            return None
        out = self.audio[self.pos:self.pos + n]
        self.pos += len(out)
        return out

    def close(self) -> None: ...


class FileSource(Source):
    """A file streamed from disk (or an array), unpaced or paced in real time, optionally looped."""

    def __init__(self, path: Path, realtime: bool = False, loop: bool = False, reader=None) -> None:
        from edgemir.audio_io import AudioReader

        self.path = Path(path)
        self.name = f"file {self.path.name}" + (" (real time)" if realtime else "")
        self.reader = reader if reader is not None else AudioReader(self.path)
        self.duration = self.reader.duration
        self.realtime = realtime
        self.loop = loop
        self.pos = 0  # samples delivered since the start (or the last loop)
        self.base = 0  # samples delivered before the last loop
        self.t0 = 0.0
        # paced reads end where a frame completes: its window's last sample, ``frame_offset + k * HOP`` in the
        # stream (the engine's earliest-completing framing; the app sets it)
        self.frame_offset = N_FFT // 2

    @classmethod
    def from_array(cls, audio: np.ndarray, name: str = "memory", realtime: bool = False, loop: bool = False) -> FileSource:
        """A file source over samples already in memory (benchmarks, tests)."""
        return cls(Path(name), realtime=realtime, loop=loop, reader=ArrayReader(audio))

    def start(self) -> None:
        self.t0 = time.perf_counter()

    def stop(self) -> None:
        self.reader.close()

    def read(self, n: int) -> np.ndarray | None:
        if self.realtime:
            # what is due, cut where a frame completes (its window's last sample: frame_offset + k * HOP),
            # as a device delivers whole periods: a read of a few samples every loop would cost the engine's
            # per-push overhead hundreds of times a second for nothing (the demo took 26% of a core, 18% now)
            due = int((time.perf_counter() - self.t0) * SAMPLE_RATE)
            end = self._frame_end(self.base + self.pos + min(n, max(0, due - self.pos)))
            n = max(0, end - self.base - self.pos)
            if n == 0:
                return np.zeros(0, dtype=np.float32)
        out = self.reader.read(n)
        if out is None:
            if not self.loop or self.pos == 0:
                return None
            self.reader.rewind()
            self.base += self.pos
            self.pos, self.t0 = 0, time.perf_counter()
            return np.zeros(0, dtype=np.float32)
        self.pos += len(out)
        return out

    def _frame_end(self, sample: int) -> int:
        """The last stream position at or before ``sample`` where a frame completes (0 before the first)."""
        off = self.frame_offset
        return off + (sample - off) // HOP * HOP if sample >= off else 0

    def wait(self, timeout: float) -> None:
        """Paced: sleep until the next frame is due (``read`` hands over whole frames only)."""
        if not self.realtime:
            return
        nxt = max(self.frame_offset, self._frame_end(self.base + self.pos + HOP))
        time.sleep(min(timeout, max(0.0, self.t0 + (nxt - self.base) / SAMPLE_RATE - time.perf_counter())))

    def arrival_time(self, sample: int) -> float | None:
        if not self.realtime:
            return None
        return self.t0 + (sample - self.base) / SAMPLE_RATE


class LiveInput(Source):
    """A device that may come and go (USB microphone unplugged, audio server restarted). On loss it
    logs, kills the capture process and starts one that retries every ``retry_s`` seconds until the
    device is back; reads meanwhile return no samples, so the worker loop (and its watchdog pings)
    keep running. Never ends by itself. An outage counts as a gap and shifts later event times by
    its length (``time_offset``), so events stay aligned with the wall clock.

    ``wait=True`` (the service): a device missing at start is waited for in the same way instead
    of being an error."""

    def __init__(self, device: str | int | None, log=print, wait: bool = False, retry_s: float = 0.5) -> None:
        self.device = device
        self.log = log
        self.retry_s = retry_s
        self.reconnects = 0
        self.lost_xruns = 0
        self.lost_nonfinite = 0
        self.gaps_before = 0.0  # clock gaps of earlier (closed) devices
        self.outage_s = 0.0  # time without a device since the start (after the first open)
        self.total = 0  # samples returned so far (the engine's timeline)
        self.base = 0  # self.total when the current device was opened
        self.offsets: list[tuple[int, float]] = []  # (engine sample where audio resumed, outage seconds so far)
        self.lost_at: float | None = None  # monotonic time the device went missing
        self.waiting_logged = 0.0
        self.ever_opened = False
        if wait:
            self.lost_at = time.monotonic()
            self.inner = ProcessDeviceSource(device, retry_s=retry_s, log=log)
        else:
            self.inner = ProcessDeviceSource(device, log=log)  # raises when there is none
            self.ever_opened = True

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.inner.name if self.inner and self.inner.opened else f"device {describe(self.device)} (waiting)"

    @property
    def xruns(self) -> int:  # type: ignore[override]
        return self.lost_xruns + (self.inner.xruns if self.inner else 0)

    @property
    def nonfinite(self) -> int:  # type: ignore[override]
        return self.lost_nonfinite + (self.inner.nonfinite if self.inner else 0)

    @property
    def gap_seconds(self) -> float:  # type: ignore[override]
        """Seconds missing: the stream clocks' gaps plus the outages (the current one included)."""
        current = time.monotonic() - self.lost_at if self.lost_at is not None and self.ever_opened else 0.0
        return self.gaps_before + self.outage_s + current + (self.inner.gap_seconds if self.inner else 0.0)

    @property
    def lost_for(self) -> float | None:
        """Seconds since the device went missing (or since the start, waiting for it), None when present."""
        return None if self.lost_at is None else time.monotonic() - self.lost_at

    def time_offset(self, sample: int) -> float:
        off = 0.0
        for start, total in self.offsets:
            if sample >= start:
                off = total
        return off

    def start(self) -> None:
        pass  # opened in __init__ (so a missing device is reported before anything else starts)

    def stop(self) -> None:
        if self.inner:
            self._close()

    def _close(self) -> None:
        """Keep the device's counts (the run's summary reads them after the stop), then kill it."""
        self.lost_xruns += self.inner.xruns
        self.lost_nonfinite += self.inner.nonfinite
        self.gaps_before += self.inner.gap_seconds
        self.inner.stop()  # kills the capture process, whatever state its backend is in
        self.inner = None

    def _pending(self) -> np.ndarray:
        """Waiting for the device: log it (once, then a line a minute), pick it up when it opens."""
        now = time.monotonic()
        if self.inner.poll():
            waited = now - self.lost_at
            if self.ever_opened:
                self.outage_s += waited
                self.offsets.append((self.total, self.outage_s))
                self.reconnects += 1
                self.log(f"input device re-opened after {waited:.1f} s: {self.inner.name}")
            else:
                self.log(f"input device opened after {waited:.1f} s: {self.inner.name}")
            self.ever_opened = True
            self.lost_at = None
            self.base = self.total
            self.waiting_logged = 0.0
            return np.zeros(0, dtype=np.float32)
        if self.inner.proc.poll() is not None:  # the retrying process died (should not happen): start another
            self._close()
            self.inner = ProcessDeviceSource(self.device, retry_s=self.retry_s, log=self.log)
        elif self.inner.waiting is not None and (not self.waiting_logged or now - self.waiting_logged >= 60):
            what = "still waiting" if self.waiting_logged else "waiting"
            self.log(f"{what} for input device {describe(self.device)} ({self.inner.waiting}); "
                     f"retrying every {self.retry_s:g} s")
            self.waiting_logged = now
        return np.zeros(0, dtype=np.float32)

    def read(self, n: int) -> np.ndarray:
        if self.lost_at is not None:
            return self._pending()
        x = self.inner.read(n)
        if x is not None:
            self.total += len(x)
            return x
        self.log(f"input device lost ({self.inner.name}); waiting for it to come back")
        last = getattr(self.inner, "last_data", None)  # audio stopped then, not when the loss was noticed
        self._close()
        self.lost_at = min(time.monotonic(), last) if last is not None else time.monotonic()
        self.inner = ProcessDeviceSource(self.device, retry_s=self.retry_s, log=self.log)
        return np.zeros(0, dtype=np.float32)

    def wait(self, timeout: float) -> None:
        if self.inner is None or self.lost_at is not None:  # waiting for the device: poll it now and then
            time.sleep(min(timeout, 0.01))
        else:
            self.inner.wait(timeout)

    def arrival_time(self, sample: int) -> float | None:
        if self.inner is None or self.lost_at is not None:
            return None
        return self.inner.arrival_time(sample - self.base)
