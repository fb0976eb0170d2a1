"""``edgemir bench --soak MINUTES``: an hour-long file through ``analyze`` with all tasks.

Prints the wall time, the real-time factor and the RSS growth (the least-squares trend of the RSS floor
over the audio after one minute of warm-up, times the duration) (the engine, the
streaming file reader and the streaming writers must keep memory flat on long files)."""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from edgemir.labels import SAMPLE_RATE

WARMUP_S = 60.0  # audio seconds analysed before the RSS baseline is taken
ENVELOPE_S = 10.0  # audio seconds per point of the RSS floor


def rss_mb() -> float:
    """Resident set size now (not the peak), from /proc."""
    import os

    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def long_file(path: Path, minutes: float, clip: Path) -> Path:
    """``minutes`` of audio made by tiling ``clip``, written block by block (never all in memory)."""
    import soundfile as sf

    from edgemir.audio_io import read_audio

    x = read_audio(clip)
    total = int(minutes * 60 * SAMPLE_RATE)
    with sf.SoundFile(str(path), "w", SAMPLE_RATE, 1, subtype="PCM_16") as f:
        done = 0
        while done < total:
            part = x[: total - done]
            f.write(part)
            done += len(part)
    return path


def floor_slope(warm: np.ndarray, window_s: float = ENVELOPE_S) -> float:
    """MB per audio second of the RSS floor: the least-squares trend of the lowest RSS in each
    ``window_s`` of audio. The allocator breathes by ±25 MB from block to block and a trend through
    every sample follows that swing (a 2.5-min run read −25 MB); a leak raises the floor."""
    if len(warm) < 3:
        return 0.0
    bins = np.floor((warm[:, 0] - warm[0, 0]) / window_s)
    pts = np.array([(warm[bins == b, 0].mean(), warm[bins == b, 1].min()) for b in np.unique(bins)])
    return float(np.polyfit(pts[:, 0], pts[:, 1], 1)[0]) if len(pts) > 2 else 0.0


def soak(bundles: dict, minutes: float, clip: Path) -> dict:
    from edgemir.app import analyze_file

    with tempfile.TemporaryDirectory(prefix="edgemir-soak-") as tmp:
        wav = long_file(Path(tmp) / "soak.wav", minutes, clip)
        samples: list[tuple[float, float]] = []  # (audio seconds done, RSS MB)
        done = [0.0]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                samples.append((done[0], rss_mb()))
                stop.wait(0.2)

        th = threading.Thread(target=sample, daemon=True)
        rss_start = rss_mb()
        th.start()
        t0 = time.perf_counter()
        res = analyze_file(wav, bundles, Path(tmp) / "out", progress=lambda s: done.__setitem__(0, s))
        wall = time.perf_counter() - t0
        stop.set()
        th.join()
        samples.append((done[0], rss_mb()))
        out_bytes = sum(p.stat().st_size for p in (Path(tmp) / "out").iterdir())
    dur = res["duration"]
    early = [r for s, r in samples if WARMUP_S <= s < 2 * WARMUP_S] or [samples[-1][1]]
    late = [r for s, r in samples if s >= dur - WARMUP_S] or [samples[-1][1]]
    warm = np.array([(s, r) for s, r in samples if s >= WARMUP_S] or samples[-2:])
    slope = floor_slope(warm)
    return {"minutes": dur / 60, "tasks": list(bundles), "wall_s": wall, "rtf": wall / dur,
            "rss_start_mb": rss_start, "rss_after_warmup_mb": max(early), "rss_end_mb": max(late),
            "rss_peak_mb": max(r for _, r in samples), "rss_growth_mb": slope * max(0.0, dur - WARMUP_S),
            "rss_min_after_warmup_mb": float(warm[:, 1].min()),
            "events": res["events"], "output_mb": out_bytes / 2**20,
            "rss_series": [(round(s, 1), round(r, 1)) for s, r in samples[:: max(1, len(samples) // 60)]]}


def print_soak(r: dict, console) -> None:
    console.print(f"soak: {r['minutes']:.1f} min through analyze ({', '.join(r['tasks'])}): wall {r['wall_s']:.1f} s, "
                  f"real-time factor {r['rtf']:.4f} ({1 / r['rtf']:.0f}x real time), RSS after warm-up "
                  f"{r['rss_min_after_warmup_mb']:.0f}–{r['rss_peak_mb']:.0f} MB (allocator swing), "
                  f"trend growth {r['rss_growth_mb']:.1f} MB "
                  f"({'within' if r['rss_growth_mb'] < 20 else 'OVER'} the 20 MB budget); {r['events']} events, "
                  f"{r['output_mb']:.1f} MB of results")
