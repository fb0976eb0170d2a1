"""Audio capture in a child process, so that a lost device can never take the engine with it.

PortAudio's JACK backend blocks forever in Pa_StopStream once the server has gone, and
re-initialising PortAudio in the same process blocks on that stream too. Capturing in a small
child process (sounddevice and numpy only, no torch) makes loss recoverable: the parent kills the
child, whatever state its backend is in, and starts a fresh one when the device is back.

The child's callback only copies (down-mixed) samples into a shared-memory ring; the parent reads
it. Single producer, single consumer: the child owns the write count, the parent the read count.
After each block the callback writes a byte to a pipe, so the parent sleeps until audio arrives
(``wait``) instead of polling.

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
import threading
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


def _child(device, shm_name: str, cap: int, blocksize: int, retry_s: float = 0.0, wake_fd: int = -1) -> None:
    """Open the device, report (name, rate) or an error on stdout, then copy samples until the
    stream ends or the parent goes away. With ``retry_s`` > 0 a failed open is reported once
    ("waiting") and retried every ``retry_s`` seconds with PortAudio re-initialised (it enumerates
    devices only at initialisation): a device or audio server that comes back is seen within
    ``retry_s``, without a new process per attempt. No stream was opened yet, so re-initialising
    cannot block on a stream of a dead server."""
    import signal
    from multiprocessing import resource_tracker

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops this process
    import sounddevice as sd

    shm = shared_memory.SharedMemory(name=shm_name)
    resource_tracker.unregister(shm._name, "shared_memory")  # the parent owns (and unlinks) it
    head, ring = _views(shm, cap)
    parent = os.getppid()

    def send(*msg) -> None:
        sys.stdout.write(json.dumps(msg) + "\n")
        sys.stdout.flush()

    attempt = 0
    while True:
        try:
            if attempt:  # PortAudio lists devices only when initialised: start it afresh for each try
                sd._terminate()
                sd._initialize()
            stream, name, rate = _open_stream(sd, device, head, ring, cap, blocksize, wake_fd)
            break
        except Exception as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            if retry_s <= 0:
                send("error", msg)
                os._exit(0)
            if not attempt:
                send("waiting", msg)
            attempt += 1
            time.sleep(retry_s)
            if os.getppid() != parent:  # until it opens, or the parent goes away
                os._exit(0)
    send("ok", name, rate)
    while stream.active and os.getppid() == parent:
        time.sleep(0.05)
    head[STATE] = ENDED
    os._exit(0)  # never wait on a stream the backend may not release


def _open_stream(sd, device, head, ring, cap: int, blocksize: int, wake_fd: int = -1):
    """Start a callback stream that copies (down-mixed) samples into the ring; (stream, name, rate)."""
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
        if wake_fd >= 0:
            try:
                os.write(wake_fd, b"\0")  # non-blocking: a full pipe already says "audio is waiting"
            except OSError:
                pass

    bs = blocksize if rate == SAMPLE_RATE else int(blocksize * rate / SAMPLE_RATE)
    stream = sd.InputStream(device=index, channels=channels, samplerate=rate, blocksize=bs, dtype="float32",
                            callback=callback)
    stream.start()
    return stream, info["name"], rate


def describe(device) -> str:
    return "(the default)" if device is None else repr(device)


class ProcessDeviceSource:
    """A capture device read through a child process (see the module docstring); resampled to
    16 kHz with soxr here when the device cannot run at 16 kHz."""

    nonfinite = 0
    wake_r = -1  # the read end of the child's wake-up pipe

    def __init__(self, device: str | int | None, blocksize: int = 160, seconds: float = 4.0,
                 open_timeout: float = 5.0, stall_s: float = 2.0, retry_s: float = 0.0, log=None) -> None:
        """``retry_s`` = 0: open now or raise a UserError. ``retry_s`` > 0: return at once; the child
        keeps trying every ``retry_s`` s, and ``poll()`` says when the device is open. The audio
        library's own messages on the child's stderr (libjack, ALSA) go to ``log``."""
        self.device = device
        self.stall_s = stall_s  # no samples for this long from a running stream = lost (e.g. a dead server)
        self.cap = int(seconds * 48000)
        self.shm = shared_memory.SharedMemory(create=True, size=HEADER + 4 * self.cap)
        self.head, self.ring = _views(self.shm, self.cap)
        self.head[:] = 0
        self.log = log or (lambda m: None)
        self.opened = False
        self.waiting: str | None = None  # why the device is not open yet (retry mode)
        self.rate = SAMPLE_RATE
        self.name = f"device {describe(device)} (waiting)"
        self.out_count = 0
        self.clock: list[tuple[int, float]] = []
        # a fresh interpreter (no torch, no inherited locks), not multiprocessing: that would re-run
        # the caller's __main__ in the child
        self.wake_r, wake_w = os.pipe()  # a byte per block from the child's callback: see ``wait``
        os.set_blocking(self.wake_r, False)
        os.set_blocking(wake_w, False)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edgemir.capture",
                 json.dumps([device, self.shm.name, self.cap, blocksize, retry_s, wake_w])],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, pass_fds=(wake_w,))
        finally:
            os.close(wake_w)
        threading.Thread(target=self._forward_stderr, args=(self.proc.stderr,), daemon=True).start()
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.buf = b""
        if retry_s > 0:
            return
        deadline = time.monotonic() + open_timeout
        while not self.poll():
            if self.waiting is not None or self.proc.poll() is not None and not self._pending_lines():
                self.stop()
                err = UserError(f"no input device {describe(device)} ({self.waiting or 'the capture process ended'});"
                                " see 'edgemir devices'")
                err.reason = self.waiting or "the capture process ended"
                raise err
            if time.monotonic() > deadline:
                self.stop()
                raise UserError(f"input device {describe(device)} did not open within {open_timeout:.0f} s")
            select.select([self.proc.stdout], [], [], 0.05)

    def _forward_stderr(self, pipe) -> None:
        """The audio library writes to stderr (e.g. libjack: "cannot connect to server socket"): into the
        log, a few lines per capture process, instead of over the display."""
        shown = 0
        while True:
            try:
                raw = pipe.readline()
            except (OSError, ValueError):  # closed by stop()
                return
            if not raw:
                return
            line = raw.decode(errors="replace").strip()
            if not line:
                continue
            shown += 1
            if shown <= 5:
                self.log(f"audio backend: {line}")
            elif shown == 6:
                self.log("audio backend: (more messages not shown)")

    def _pending_lines(self) -> bool:
        try:
            chunk = self.proc.stdout.read()
        except (OSError, ValueError):
            chunk = None
        if chunk:
            self.buf += chunk
        return b"\n" in self.buf

    def poll(self) -> bool:
        """Read the child's messages without blocking; True once the device is open."""
        if self.opened:
            return True
        self._pending_lines()
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            msg = json.loads(line)
            if msg[0] in ("error", "waiting"):
                self.waiting = msg[1]
            elif msg[0] == "ok":
                self._opened(msg[1], msg[2])
        return self.opened

    def _opened(self, dev_name: str, rate: int) -> None:
        self.opened, self.waiting, self.rate = True, None, rate
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
        if not self.opened:
            if self.poll():
                return np.zeros(0, dtype=np.float32)
            return None if self.proc.poll() is not None and not self._pending_lines() else np.zeros(0, np.float32)
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

    def wait(self, timeout: float) -> None:
        """Sleep until the child has written a block (or ``timeout`` seconds): the worker loop wakes once
        per block instead of polling."""
        if self.wake_r < 0:
            time.sleep(timeout)
            return
        if select.select([self.wake_r], [], [], timeout)[0]:
            try:
                os.read(self.wake_r, 4096)
            except OSError:
                pass

    def stop(self) -> None:
        """Kill the child whatever its backend is doing; never blocks for long."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(1.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(1.0)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe:
                pipe.close()
        if self.wake_r >= 0:
            os.close(self.wake_r)
            self.wake_r = -1
        if self.shm is not None:
            self.head = self.ring = None  # drop the views before closing the mapping
            self.shm.close()
            self.shm.unlink()
            self.shm = None


if __name__ == "__main__":
    _child(*json.loads(sys.argv[1]))
