"""CPU cost of the whole engine per minute of audio, as docs/streaming.md reports it (run on request):

    .venv/bin/python tests/cost_engine.py [--tasks pitch,onset,chord,drums,instrument] [--block 4] [--models DIR]

The demo clip, tiled to 64 s, is pushed through ``Engine.push`` one hop (160 samples) at a time, as a
live device delivers it; the first 4 s are warm-up. One torch thread.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgemir.app import build_engine, load_models  # noqa: E402
from edgemir.audio_io import (
    DEMO,  # noqa: E402
    read_audio,  # noqa: E402
)
from edgemir.labels import HOP, SAMPLE_RATE, TASKS  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--block", type=int, default=4)
    ap.add_argument("--models", type=Path, help="folder of bundles (default: the shipped ones)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    tasks = args.tasks.split(",")
    x = np.tile(read_audio(DEMO), 4)
    eng = build_engine(load_models(tasks, args.models), block=args.block)
    warm = 4 * SAMPLE_RATE
    for i in range(0, warm, HOP):
        eng.push(x[i:i + HOP])
    t0 = time.process_time()
    for i in range(warm, len(x), HOP):
        eng.push(x[i:i + HOP])
    cpu = time.process_time() - t0
    audio_s = (len(x) - warm) / SAMPLE_RATE
    print(f"{args.tasks} block {args.block}: {cpu / audio_s * 60:.2f} CPU s per audio minute "
          f"({cpu / audio_s * 100:.1f}% of a core)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
