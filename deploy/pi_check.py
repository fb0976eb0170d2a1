"""Numbers to compare across machines (run by deploy/pi-check.sh on the host and under emulated aarch64).

    python deploy/pi_check.py outputs OUT.pt [BUNDLE ...]   every bundle on the demo clip, 1 and 4 threads
    python deploy/pi_check.py compare HOST.pt OTHER.pt      max abs difference per bundle and thread count
    python deploy/pi_check.py events HOST_DIR OTHER_DIR     the two `edgemir analyze` outputs, file by file
    python deploy/pi_check.py footprint                     MB on disk of this interpreter's venv, as a Pi has it

Each bundle runs its front-end (``features``), its network (``forward`` from the initial state) and,
frozen as the engine runs it, its incremental ``step``, on the spectra of the bundled demo clip.
Exit 1 on a mismatch.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
TOL = 1e-4


def outputs(out: Path, bundles: list[Path]) -> int:
    from edgemir.audio_io import AudioReader
    from edgemir.bundle import load_bundle
    from edgemir.frontend import Framing, batch_spectrum

    r = AudioReader(ROOT / "edgemir" / "data" / "demo.wav")
    blocks = []
    while (b := r.read(16000)) is not None:
        blocks.append(b)
    x = np.concatenate(blocks)
    res: dict = {"machine": platform.machine(), "torch": str(torch.__version__)}
    for path in bundles:
        b = load_bundle(path)
        # 8 s (801 frames) on the framing the bundle reads
        spec = batch_spectrum(torch.from_numpy(x[: 16000 * 8]), Framing.from_card(b.card["frontend"]))
        for threads in (1, 4):
            torch.set_num_threads(threads)
            with torch.no_grad():
                f = b.module.features(spec)
                y, state = b.module(f.unsqueeze(0), b.module.initial_state())
                # the engine's path: the frozen module's incremental step, four hops at a time
                fz = torch.jit.freeze(b.module.eval(), preserved_attrs=["step", "initial_stream"])
                st, parts = fz.initial_stream(), []
                for i in range(0, len(spec), 4):
                    y_i, st = fz.step(spec[i:i + 4], st)
                    parts.append(y_i)
            res[f"{path.name} threads={threads}"] = {"features": f, "output": y, "state": state,
                                                     "step": torch.cat(parts, 2)}
    torch.save(res, out)
    print(f"{res['machine']} torch {res['torch']}: {len(bundles)} bundles -> {out}")
    return 0


def compare(a: Path, b: Path) -> int:
    ra, rb = torch.load(a), torch.load(b)
    print(f"reference {ra['machine']} torch {ra['torch']}  vs  {rb['machine']} torch {rb['torch']}")
    bad = 0
    for key in [k for k in ra if k not in ("machine", "torch")]:
        if key not in rb:
            print(f"{key:<40} MISSING")
            bad += 1
            continue
        diffs = {n: float((ra[key][n] - rb[key][n]).abs().max()) if ra[key][n].numel() else 0.0
                 for n in ("features", "output", "state", "step")}
        worst = max(diffs.values())
        ok = worst <= TOL
        bad += not ok
        print(f"{key:<26} max|diff| features {diffs['features']:.1e}  output {diffs['output']:.1e}  "
              f"state {diffs['state']:.1e}  step {diffs['step']:.1e}  {'MATCH' if ok else 'MISMATCH'}")
    return 1 if bad else 0


def events(a: Path, b: Path) -> int:
    """Same events: the same count, times, tasks, labels and voicing decisions; f0 within 0.05 cent
    and confidences within 1e-3 (float kernels differ in the last digits across CPUs). Annotation
    files without numbers to round must be byte-identical."""
    import math

    bad = 0
    names = sorted(p.name for p in a.iterdir() if p.is_file())
    for name in names:
        if name.endswith((".json", ".f0.csv")):
            continue
        same = (b / name).exists() and (a / name).read_bytes() == (b / name).read_bytes()
        bad += not same
        print(f"{name:<24} {'identical' if same else 'DIFFERENT'}")
    for name in [n for n in names if n.endswith(".json")]:
        ea, eb = json.loads((a / name).read_text())["events"], json.loads((b / name).read_text())["events"]
        cents = conf = 0.0
        ok = len(ea) == len(eb)
        for x, y in zip(ea, eb):
            ok &= (x["t"], x["task"]) == (y["t"], y["task"])
            if x["task"] == "pitch":
                ok &= (x["value"] > 0) == (y["value"] > 0)
                cents = max(cents, abs(1200 * math.log2(abs(x["value"]) / abs(y["value"]))))
            else:
                ok &= x["value"] == y["value"]
            conf = max(conf, abs(x["confidence"] - y["confidence"]))
        ok &= cents <= 0.05 and conf <= 1e-3  # 0.001 Hz, the JSON rounding, is 0.05 cent at 35 Hz
        bad += not ok
        print(f"{name:<24} {len(ea)} events vs {len(eb)}: {'same' if ok else 'DIFFERENT'} times, tasks, labels and "
              f"voicing; f0 within {cents:.4f} cent, confidence within {conf:.1e}")
    return 1 if bad or not names else 0


def footprint() -> int:
    """Bytes under ``sys.prefix`` (the venv: torch, numpy, edgemir's runtime dependencies), leaving out
    torch's x86_64-only requirements (nvidia-*, triton): the emulation tool resolves with pip's
    ``--platform``, which still evaluates ``platform_machine == "x86_64"`` markers for the host, so
    they are in its venv but a Pi's pip never installs them."""
    import os

    total = skipped = 0
    for d, _, files in os.walk(sys.prefix):
        parts = Path(d).relative_to(sys.prefix).parts
        size = sum(os.lstat(os.path.join(d, f)).st_size for f in files)
        if "site-packages" in parts and len(parts) > parts.index("site-packages") + 1 \
                and parts[parts.index("site-packages") + 1].startswith(("nvidia", "triton")):
            skipped += size
        else:
            total += size
    print(f"venv {sys.prefix}: {total / 1e6:.0f} MB as installed on a Pi "
          f"({skipped / 1e6:.0f} MB of x86_64-only torch requirements left out)")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    cmd, *rest = sys.argv[1:] or ["help"]
    if cmd == "outputs":
        sys.exit(outputs(Path(rest[0]), [Path(p) for p in rest[1:]] or sorted((ROOT / "edgemir/models").glob("*.ts"))))
    if cmd == "compare":
        sys.exit(compare(Path(rest[0]), Path(rest[1])))
    if cmd == "footprint":
        sys.exit(footprint())
    if cmd == "events":
        sys.exit(events(Path(rest[0]), Path(rest[1])))
    print(__doc__)
    sys.exit(64)
