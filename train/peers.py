"""``python -m train peers``: what users would pick instead, scored like the shipped bundles.

Each peer runs on every clip of a labelled folder (the rendered test split, ``shared/dev-real``), writes
the project's annotation files and is scored by the same mir_eval code as ours; the shipped bundle is
run through ``edgemir analyze`` on the same folders. A peer's one free setting (voicing or peak-picking
threshold) is tuned on the valid split for the metric ours is tuned for, as our decoders are.
Speed is single-thread CPU time per second of audio (process time, so other jobs on the machine do not
inflate it): for peers the processing alone, for ours the whole ``analyze`` (reading, front-end,
networks, decoders, writing), so the comparison favours peers."""

from __future__ import annotations

import importlib.util
import json
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgemir import formats
from edgemir.labels import HOP, PITCH_BINS, PITCH_CENTS_PER_BIN, PITCH_FMIN, SAMPLE_RATE
from edgemir.tasks import HEADLINE, REGISTRY
from train.metrics import TUNE, evaluate_folders

FMAX = PITCH_FMIN * 2 ** (PITCH_BINS * PITCH_CENTS_PER_BIN / 1200)  # our pitch range, C1 to D#7
TASKS = ("pitch", "onset")
# a peer: raw analysis of one clip (slow, timed) and its decoding under one setting into an annotation
Raw = Callable[[np.ndarray], object]
Decode = Callable[[object, float], tuple]


def _load(path: Path) -> np.ndarray:
    import librosa

    return librosa.load(path, sr=SAMPLE_RATE, mono=True)[0].astype(np.float32)


def aubio_yinfft(x: np.ndarray, silence_db: float) -> tuple:
    """aubio's streaming YIN-FFT, one f0 per 10 ms hop over the last 1024 samples. Its voicing is its
    silence gate (it outputs 0 Hz below it): yinfft's confidence is always 0 in aubio 0.4.12."""
    import aubio

    det = aubio.pitch("yinfft", 1024, HOP, SAMPLE_RATE)
    det.set_unit("Hz")
    det.set_silence(silence_db)
    n = len(x) // HOP
    f0 = np.array([det(x[i * HOP:(i + 1) * HOP])[0] for i in range(n)], dtype=float)
    # the window ending at sample (i+1)*HOP is centred 512 samples earlier
    t = ((np.arange(n) + 1) * HOP - 512) / SAMPLE_RATE
    # a silent hop has no guess: keep the last one, negated (unvoiced), as ours and mir_eval expect
    guess = np.maximum.accumulate(np.where(f0 > 0, np.arange(n), 0))
    return t, np.where(f0 > 0, f0, -np.where(f0[guess] > 0, f0[guess], PITCH_FMIN))


def librosa_pyin(x: np.ndarray):
    """librosa's probabilistic YIN over our pitch range; its own voicing decision."""
    import librosa

    f0, voiced, prob = librosa.pyin(x, fmin=PITCH_FMIN, fmax=FMAX, sr=SAMPLE_RATE, frame_length=1024,
                                    hop_length=HOP, fill_na=None)
    return librosa.times_like(f0, sr=SAMPLE_RATE, hop_length=HOP), f0, prob


def swift_f0(x: np.ndarray):
    """swift-f0 (an 18k-parameter ONNX CNN shipped in its wheel, 16 kHz, 16 ms hops) over its own range
    (46.9-2093.8 Hz), one thread; its confidence is the voicing, resampled to our 10-ms grid."""
    from swift_f0 import SwiftF0

    r = SwiftF0(threads=1).detect(x, SAMPLE_RATE)
    t = np.arange(int(len(x) / HOP)) * HOP / SAMPLE_RATE
    f0 = np.interp(t, r.timestamps, np.where(r.pitch_hz > 0, r.pitch_hz, np.nan))  # nan where unvoiced
    near = np.clip(np.searchsorted(r.timestamps, t), 0, len(r.timestamps) - 1)
    return t, f0, np.asarray(r.confidence)[near]


def pitch_decode(raw, threshold: float) -> tuple:
    """Voiced where confidence >= threshold; unvoiced frames keep their guess, negated (as ours)."""
    t, f0, conf = raw
    f0 = np.where(np.nan_to_num(f0) > 0, f0, PITCH_FMIN)
    return t, np.where(conf >= threshold, f0, -f0)


def audio(x: np.ndarray) -> np.ndarray:
    """No raw pass: an aubio detector runs whole for each setting (its gate or peak picker is inside)."""
    return x


def aubio_onsets(x: np.ndarray, threshold: float) -> tuple:
    import aubio

    det = aubio.onset("specflux", 1024, HOP, SAMPLE_RATE)
    det.set_threshold(threshold)
    out = []
    for i in range(len(x) // HOP):
        if det(x[i * HOP:(i + 1) * HOP])[0]:
            out.append(det.get_last_s())
    return (np.asarray(out),)


def librosa_flux(x: np.ndarray):
    import librosa

    return librosa.onset.onset_strength(y=x, sr=SAMPLE_RATE, hop_length=HOP)


def librosa_onsets(env, delta: float) -> tuple:
    import librosa

    return (librosa.onset.onset_detect(onset_envelope=env, sr=SAMPLE_RATE, hop_length=HOP, units="time",
                                       delta=delta),)


# name: (task, raw analysis, decode, settings tried on valid, what the setting is)
PEERS: dict[str, tuple[str, Raw, Decode, list[float], str]] = {
    "aubio pitch (yinfft)": ("pitch", audio, aubio_yinfft, [-90, -70, -60, -50, -45, -40, -30], "silence dB"),
    "librosa.pyin": ("pitch", librosa_pyin, pitch_decode, [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5],
                     "voiced probability"),
    "swift-f0": ("pitch", swift_f0, pitch_decode, [0.3, 0.5, 0.7, 0.8, 0.9, 0.95], "confidence"),
    "aubio onset (specflux)": ("onset", audio, aubio_onsets, [0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.2], "threshold"),
    "librosa.onset_detect": ("onset", librosa_flux, librosa_onsets, [0.005, 0.01, 0.02, 0.05, 0.07, 0.1, 0.2], "delta"),
}


OPTIONAL = {"swift-f0": "swift_f0"}  # peers from the `peers` extra, run when installed


def _write(task: str, out: Path, stem: str, est: tuple) -> None:
    spec = REGISTRY[task]
    if spec.format == "f0":
        formats.write_f0(out / f"{stem}{spec.suffix}", *est)
    else:
        formats.write_times(out / f"{stem}{spec.suffix}", est[0])


def _score(task: str, folder: Path, raws: dict[str, object], decode: Decode, setting: float,
           timing: dict | None = None) -> dict:
    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mir_eval warns when a high threshold leaves no voiced frame
        for stem, raw in raws.items():
            t = time.process_time()
            est = decode(raw, setting)
            if timing is not None:
                timing["seconds"] += time.process_time() - t
            _write(task, Path(d), stem, est)
        return evaluate_folders(task, folder, Path(d))["summary"]


def run_peer(name: str, folders: dict[str, Path]) -> dict:
    """Tune the peer's setting on ``folders['valid']``, then score and time it on every other folder."""
    task, raw_fn, decode, settings, what = PEERS[name]
    row: dict = {"peer": name, "task": task, "setting": what}
    for split, folder in folders.items():
        audio = {w.stem: _load(w) for w in sorted(folder.glob("*.wav"))}
        timing = {"seconds": 0.0}
        t = time.process_time()
        raws = {s: raw_fn(x) for s, x in audio.items()}
        timing["seconds"] += time.process_time() - t
        if split == "valid":
            tuned = {s: _score(task, folder, raws, decode, s)[TUNE[task]] for s in settings}
            row["value"] = max(settings, key=lambda s: (tuned[s], -abs(s - settings[len(settings) // 2])))
            row["valid"] = tuned[row["value"]]
            continue
        row[split] = _score(task, folder, raws, decode, row["value"], timing)
        row.setdefault("ms_per_second_audio", {})[split] = (
            timing["seconds"] * 1000 / (sum(len(x) for x in audio.values()) / SAMPLE_RATE))
    return row


def run_ours(task: str, bundle: Path, folders: dict[str, Path]) -> dict:
    """The shipped bundle through ``edgemir analyze`` (the device's code path)."""
    from train.ship import analyze_folder

    row: dict = {"peer": f"edgemir {bundle.name}", "task": task, "ours": True}
    for split, folder in folders.items():
        if split == "valid":
            continue
        with tempfile.TemporaryDirectory() as d:
            t = time.process_time()
            seconds = analyze_folder(task, bundle, folder, Path(d))
            dt = time.process_time() - t
            row[split] = evaluate_folders(task, folder, Path(d))["summary"]
        row.setdefault("ms_per_second_audio", {})[split] = dt * 1000 / seconds
    return row


def peers_markdown(rows: list[dict], splits: list[str]) -> str:
    out = []
    for task in (t for t in TASKS if any(r["task"] == t for r in rows)):
        ms = list(dict.fromkeys((HEADLINE[task], TUNE[task])))  # pitch: RPA and overall accuracy (voicing too)
        cols = [(s, m) for s in splits for m in ms]
        out += ["| task | tool | setting (tuned on valid) | " + " | ".join(f"{s} {m}" for s, m in cols)
                + " | ms per s of audio (test) |", "|---|---|---|" + "---:|" * (len(cols) + 1)]
        for r in (r for r in rows if r["task"] == task):
            setting = "—" if r.get("ours") else f"{r['setting']} {r['value']:g}"
            scores = " | ".join(f"{r[s][m]:.3f}" if s in r else "" for s, m in cols)
            out.append(f"| {task} | {r['peer']} | {setting} | {scores} | {r['ms_per_second_audio']['test']:.1f} |")
        out.append("")
    return "\n".join(out)


def peers_command(args) -> None:
    import torch
    from rich.console import Console

    torch.set_num_threads(1)
    con = Console(stderr=True)
    rows = []
    for task in args.tasks:
        folders = {"valid": args.data / task / "valid", "test": args.data / task / "test"}
        if args.dev_real and (args.dev_real / task).is_dir():
            folders["dev-real"] = args.dev_real / task
        for name in (n for n, p in PEERS.items() if p[0] == task):
            if name in OPTIONAL and importlib.util.find_spec(OPTIONAL[name]) is None:
                con.log(f"{task}: {name} is not installed (pip install -e '.[peers]'); left out")
                continue
            con.log(f"{task}: {name}")
            rows.append(run_peer(name, folders))
        con.log(f"{task}: edgemir")
        rows.append(run_ours(task, args.models / f"{task}.ts", folders))
    args.out.mkdir(parents=True, exist_ok=True)
    old = args.out / "peers.json"
    if old.is_file():  # tasks not run this time keep their rows
        rows = [r for r in json.loads(old.read_text()) if r["task"] not in args.tasks] + rows
    (args.out / "peers.json").write_text(json.dumps(rows, indent=1))
    splits = ["test"] + (["dev-real"] if args.dev_real else [])
    (args.out / "peers.md").write_text(peers_markdown(rows, splits))
    print(peers_markdown(rows, splits))
