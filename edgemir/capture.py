"""Audio capture in a child process, so that a lost device can never take the engine with it.

PortAudio's JACK backend blocks forever in Pa_StopStream once the server has gone, and
re-initialising PortAudio in the same process blocks on that stream too. Capturing in a small
child process (sounddevice and numpy only, no torch) makes loss recoverable: the parent kills the
child, whatever state its backend is in, and starts a fresh one when the device is back.

The child's callback only copies (down-mixed) samples into a shared-memory ring; the parent reads
it. Single producer, single consumer: the child owns the write count, the parent the read count.

Besides the backend's overflow flags, gaps in the stream clock are measured: a JACK server skips
the periods of a late client without always raising PortAudio's overflow flag, but the ADC time of
the next block jumps. The gap is reported, not filled: a clock that stretches instead of dropping
samples (JACK's dummy driver in synchronous mode, under load) jumps the same way with nothing lost.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from multiprocessing import shared_memory

import numpy as np

from edgemir.errors import UserError
from edgemir.labels import SAMPLE_RATE

# header slots (int64): samples written, samples read, blocks dropped, backend xruns, state, clock gap samples
W, R, OVERFLOW, FLAGS, STATE, GAP = range(6)
RUNNING, ENDED = 0, 1
HEADER = 8 * 8


def _views(shm: shared_memory.SharedMemory, cap: int) -> tuple[np.ndarray, np.ndarray]:
    return (np.ndarray((8,), dtype=np.int64, buffer=shm.buf[:HEADER]),
            np.ndarray((cap,), dtype=np.float32, buffer=shm.buf[HEADER:HEADER + 4 * cap]))


def clock_gap(adc: float, last_adc: float, last_frames: int, rate: int) -> int:
    """Samples missing between two blocks, from their ADC times (0: none, or no clock: a backend
    that reports time 0). Pairwise, so that clock drift never adds up. PortAudio stamps a block that
    straddles two host buffers with the second one's time, up to one block late, so only a gap of
    more than 1.5 blocks counts (two skipped periods or more)."""
    if adc <= 0 or last_adc <= 0 or last_frames <= 0:
        return 0
    missing = (adc - last_adc) * rate - last_frames
    return int(round(missing)) if missing > 1.5 * last_frames else 0


def _child(device, shm_name: str, cap: int, blocksize: int) -> None:
    """Open the device, report (name, rate) or an error on stdout, then copy samples until the
    stream ends or the parent goes away."""
    from multiprocessing import resource_tracker

    import sounddevice as sd

    shm = shared_memory.SharedMemory(name=shm_name)
    resource_tracker.unregister(shm._name, "shared_memory")  # the parent owns (and unlinks) it
    head, ring = _views(shm, cap)

    def send(*msg) -> None:
        sys.stdout.write(json.dumps(msg) + "\n")
        sys.stdout.flush()

    try:
        info = sd.query_devices(device, "input")
        index = info["index"] if "index" in info else device
        channels = max(1, min(2, int(info["max_input_channels"])))
        rate = SAMPLE_RATE
        try:
            sd.check_input_settings(index, channels=channels, samplerate=SAMPLE_RATE, dtype="float32")
        except Exception:
            rate = int(info["default_samplerate"])
        mix = np.zeros(1 << 16, dtype=np.float32)
        last = [0.0, 0]  # the previous block's ADC time and length

        def callback(indata, frames, time_info, status) -> None:  # realtime thread: copy only
            if status.input_overflow:
                head[FLAGS] += 1
            adc = time_info.inputBufferAdcTime
            head[GAP] += clock_gap(adc, last[0], last[1], rate)
            last[0], last[1] = adc, frames
            m = mix[:frames]
            if channels == 1:
                m[:] = indata[:, 0]
            else:
                np.mean(indata, axis=1, out=m)
            w = int(head[W])
            if w + frames - int(head[R]) > cap:  # the parent is too slow: drop this block
                head[OVERFLOW] += 1
                return
            i = w % cap
            k = min(frames, cap - i)
            ring[i:i + k] = m[:k]
            if k < frames:
                ring[: frames - k] = m[k:]
            head[W] = w + frames  # published after the samples

        bs = blocksize if rate == SAMPLE_RATE else int(blocksize * rate / SAMPLE_RATE)
        stream = sd.InputStream(device=index, channels=channels, samplerate=rate, blocksize=bs, dtype="float32",
                                callback=callback)
        stream.start()
    except Exception as e:
        send("error", str(e).splitlines()[0] if str(e) else type(e).__name__)
        os._exit(0)
    send("ok", info["name"], rate)
    parent = os.getppid()
    while stream.active and os.getppid() == parent:
        time.sleep(0.05)
    head[STATE] = ENDED
    os._exit(0)  # never wait on a stream the backend may not release


class ProcessDeviceSource:
    """A capture device read through a child process (see the module docstring); resampled to
    16 kHz with soxr here when the device cannot run at 16 kHz."""

    nonfinite = 0

    def __init__(self, device: str | int | None, blocksize: int = 160, seconds: float = 4.0,
                 open_timeout: float = 5.0, stall_s: float = 2.0) -> None:
        self.device = device
        self.stall_s = stall_s  # no samples for this long from a running stream = lost (e.g. a dead server)
        self.cap = int(seconds * 48000)
        self.shm = shared_memory.SharedMemory(create=True, size=HEADER + 4 * self.cap)
        self.head, self.ring = _views(self.shm, self.cap)
        self.head[:] = 0
        # a fresh interpreter (no torch, no inherited locks), not multiprocessing: that would re-run
        # the caller's __main__ in the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgemir.capture", json.dumps([device, self.shm.name, self.cap, blocksize])],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        ready, _, _ = select.select([self.proc.stdout], [], [], open_timeout)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            self.stop()
            raise UserError(f"input device {device!r} did not open within {open_timeout:.0f} s")
        msg = json.loads(line)
        if msg[0] == "error":
            self.stop()
            raise UserError(f"no input device {device!r} ({msg[1]}); see 'edgemir devices'")
        _, dev_name, self.rate = msg
        self.name = f"device {dev_name} @ {self.rate} Hz"
        self.resampler = None
        if self.rate != SAMPLE_RATE:
            import soxr

            self.resampler = soxr.ResampleStream(self.rate, SAMPLE_RATE, 1, dtype="float32")
        self.out_count = 0
        self.clock: list[tuple[int, float]] = []  # (samples delivered at 16 kHz, perf_counter) per read
        self.last_data = time.monotonic()

    def start(self) -> None: ...

    @property
    def xruns(self) -> int:
        return int(self.head[OVERFLOW] + self.head[FLAGS]) if self.shm is not None else 0

    @property
    def gap_seconds(self) -> float:
        """Time missing between blocks by the stream clock (see the module docstring)."""
        return float(self.head[GAP]) / self.rate if self.shm is not None else 0.0

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None and self.head[STATE] == RUNNING

    def read(self, n: int) -> np.ndarray | None:
        """Whatever has arrived (empty when nothing yet), None once the device is gone."""
        w, r = int(self.head[W]), int(self.head[R])
        if w == r:
            if not self.alive or time.monotonic() - self.last_data > self.stall_s:
                return None
            return np.zeros(0, dtype=np.float32)
        self.last_data = time.monotonic()
        i = r % self.cap
        k = min(w - r, self.cap - i)
        x = np.concatenate([self.ring[i:i + k], self.ring[: w - r - k]])
        self.head[R] = w
        now = time.perf_counter()
        bad = ~np.isfinite(x)
        if bad.any():  # before the resampler: one NaN would poison its filter state for good
            self.nonfinite += int(bad.sum())
            x = np.where(bad, 0.0, x).astype(np.float32)
        if self.resampler is not None:
            x = self.resampler.resample_chunk(x)
        self.out_count += len(x)
        self.clock.append((self.out_count, now))
        self.clock = self.clock[-64:]
        return x

    def arrival_time(self, sample: int) -> float | None:
        for count, t in self.clock:
            if count >= sample:
                return t
        return None

    def stop(self) -> None:
        """Kill the child whatever its backend is doing; never blocks for long."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(1.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(1.0)
        if self.proc.stdout:
            self.proc.stdout.close()
        if self.shm is not None:
            self.head = self.ring = None  # drop the views before closing the mapping
            self.shm.close()
            self.shm.unlink()
            self.shm = None


if __name__ == "__main__":
    _child(*json.loads(sys.argv[1]))
