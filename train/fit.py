"""Dense training: Adam, plateau LR schedule, early stopping on the validation score (measured
through the device's engine and decoders), then a test-split evaluation and a dense bundle."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from edgemir.audio_io import read_audio
from edgemir.engine import Engine, TaskRunner, analyze_array
from edgemir.errors import UserError
from edgemir.formats import chord_segments
from edgemir.frontend import CENTRED, Framing
from edgemir.labels import PITCH_BINS
from edgemir.tasks import HEADLINE, REGISTRY, make_decoder
from train import metrics
from train.dataset import IGNORE, Batcher, Item, load_split, pitch_salience_target, training_data
from train.export import task_model
from train.nets import FrameNet, build, net_framing

console = Console(stderr=True)
STEPS_PER_EPOCH = 150
FIT_SETTINGS = ("task", "epochs", "steps", "batch", "lr", "seed", "width")  # what makes two dense trainings the same
# Decoder tuning (each task's grid is in its registry spec) keeps, among the settings within LATENCY_TOLERANCE
# of the best score, those of the lowest decoder delay (a peak-picking window, a chord's minimum duration),
# and the best of them.
LATENCY_TOLERANCE = 0.005


def seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def loss_fn(task: str, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The task's loss (its spec's ``loss``): salience + voicing, per-class events, or one class per frame."""
    kind = REGISTRY[task].loss
    if kind == "salience":
        sal, voiced = pitch_salience_target(target)
        l_sal = F.binary_cross_entropy_with_logits(y[:, :PITCH_BINS], sal, reduction="none").mean(1)
        l_sal = (l_sal * voiced).sum() / voiced.sum().clamp(min=1)
        return l_sal + 0.5 * F.binary_cross_entropy_with_logits(y[:, PITCH_BINS], voiced)
    if kind == "bce":
        t = target.transpose(1, 2)
        return F.binary_cross_entropy_with_logits(y, t, pos_weight=torch.tensor(5.0))
    return F.cross_entropy(y, target, ignore_index=IGNORE)


def distill_loss(task: str, y: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Knowledge distillation (Hinton et al. 2015, temperature 1): the student's outputs against the
    dense parent's soft ones, in each task's own likelihood. Sigmoid outputs (pitch salience and voicing,
    onsets, drums) are matched per unit by binary cross-entropy; softmax tasks by cross-entropy on the
    frames the task loss scores (instrument ignores silent frames). Minimal where ``y == teacher``."""
    if REGISTRY[task].sigmoid:
        return F.binary_cross_entropy_with_logits(y, torch.sigmoid(teacher))
    ce = -(F.softmax(teacher, 1) * F.log_softmax(y, 1)).sum(1)  # (batch, frames)
    keep = (target != IGNORE).float()
    return (ce * keep).sum() / keep.sum().clamp(min=1)


# -- evaluation through the engine ---------------------------------------------------------
def run_probs(task: str, net: FrameNet, items: list[Item]) -> list[tuple[Item, list]]:
    """Engine outputs per item, decoded later (so decoder settings can be tuned without rerunning)."""
    card = {"receptive_field": net.receptive_field, "lookahead": net.lookahead, "frontend": net_framing(net).card()}
    return model_probs(task, task_model(task, net).eval(), card, items)


def model_probs(task: str, model, card: dict, items: list[Item]) -> list[tuple[Item, list]]:
    """The same for a task model (a ``TaskModel`` or a loaded bundle's TorchScript module)."""
    out = []
    for it in items:
        rec = RecordingDecoder()
        eng = Engine([TaskRunner(task, model, card, decoder=rec, block=1000)])
        analyze_array(eng, read_audio(it.audio_path), block_s=30.0)
        out.append((it, rec))
    return out


class RecordingDecoder:
    """Keeps raw probabilities and levels so several decoder settings can be scored."""

    task = ""
    delay_frames = 0

    def __init__(self) -> None:
        self.chunks: list[tuple[np.ndarray, int, np.ndarray]] = []

    def push(self, probs, first, levels):
        self.chunks.append((probs, first, levels))
        return []

    def finish(self):
        return []

    def replay(self, task: str, n_frames: int, **kw):
        dec = make_decoder(task, **kw)
        ev = []
        for p, f, lv in self.chunks:
            ev += dec.push(p, f, lv)
        ev += dec.finish()
        return ev, dec


def estimate(task: str, rec: RecordingDecoder, n_frames: int, dur: float, **kw):
    """Events -> the metric's estimate format (what ``edgemir analyze`` writes)."""
    ev, dec = rec.replay(task, n_frames, **kw)
    ev = [e for e in ev if e.t <= dur + 1e-9]
    spec = REGISTRY[task]
    if spec.format == "f0":
        return np.array([e.t for e in ev]), np.array([e.value for e in ev])
    if spec.format == "times":
        return np.array([e.t for e in ev])
    if spec.format == "events":
        return {c: np.array([e.t for e in ev if e.value == c]) for c in spec.classes}
    if spec.format == "segments":
        segs = chord_segments([(e.t, e.value) for e in ev], dur)
        return np.array([[a, b] for a, b, _ in segs]), [s[2] for s in segs]
    whole, _ = dec.summary()
    return whole or spec.classes[0]


def reference(task: str, it: Item):
    from train import annotations as ann

    return ann.read_annotation(task, it.audio_path.with_name(it.name + REGISTRY[task].suffix))


def decoder_grid(task: str) -> list[dict]:
    return [dict(kw) for kw in REGISTRY[task].grid]


def score(task: str, recs, kw: dict) -> dict:
    per = {}
    for it, rec in recs:
        n = len(it.levels)
        dur = n / 100.0
        per[it.name] = metrics.score_item(task, reference(task, it), estimate(task, rec, n, dur, **kw))
    return metrics.aggregate(task, per)


def headline(task: str, summary: dict) -> float:
    return float(summary[HEADLINE[task]])


def tune_and_score(task: str, net: FrameNet, items: list[Item], decoder: dict | None = None) -> tuple[dict, dict]:
    """Best decoder settings on ``items`` (or the given ones) and their summary."""
    return tune_on(task, run_probs(task, net, items), decoder)


def class_key(task: str, c: str) -> str:
    """The summary key of class ``c``'s score in the task's tuning objective (pooled or item mean)."""
    return f"{c}_pooled_f" if REGISTRY[task].tune == "pooled_mean_f" else c


def tune_on(task: str, recs: list, decoder: dict | None = None) -> tuple[dict, dict]:
    """Best decoder settings (by the spec's ``tune`` key) for recorded engine outputs, and their summary."""
    grid = [decoder] if decoder is not None else decoder_grid(task)
    tried = [(kw, score(task, recs, kw)) for kw in grid]
    classes = REGISTRY[task].classes
    if REGISTRY[task].per_class_thresholds and decoder is None:
        # each class's F depends on its own threshold only: take the best one per class (per window)
        for w in sorted({kw.get("window", 2) for kw, _ in tried}):
            same = [r for r in tried if r[0].get("window", 2) == w]
            per_class = tuple(max(same, key=lambda r, c=c: r[1][class_key(task, c)])[0]["thresholds"][i]
                              for i, c in enumerate(classes))
            kw = {"thresholds": per_class, "window": w}
            tried.append((kw, score(task, recs, kw)))
    if decoder is None:  # the lowest decoder delay within the tolerance of the best score
        best = max(float(r[1][REGISTRY[task].tune]) for r in tried)
        near = [r for r in tried if float(r[1][REGISTRY[task].tune]) >= best - LATENCY_TOLERANCE]
        delay = {id(r): make_decoder(task, **r[0]).delay_frames for r in near}
        tried = [r for r in near if delay[id(r)] == min(delay.values())]
    return max(tried, key=lambda r: float(r[1][REGISTRY[task].tune]))


# -- training ------------------------------------------------------------------------------
def _rng_state(batcher: Batcher) -> dict:
    return {"torch": torch.get_rng_state(), "batcher": batcher.rng.bit_generator.state}


def _set_rng_state(batcher: Batcher, st: dict) -> None:
    torch.set_rng_state(st["torch"])
    batcher.rng.bit_generator.state = st["batcher"]


def train_epochs(task: str, net: FrameNet, batcher: Batcher, valid: list[Item], epochs: int, lr: float,
                 batch: int, ckpt_dir: Path | None = None, masks: dict | None = None, patience: int = 5,
                 label: str = "fit", keep_epochs: tuple[int, ...] = (),
                 steps: int = STEPS_PER_EPOCH, teacher: FrameNet | None = None,
                 distill: float = 0.0, resume: Path | None = None) -> tuple[FrameNet, dict]:
    """Train with early stopping on the validation headline; returns the best net and history.
    With a ``teacher`` the loss is ``(1 - distill) * task loss + distill * distill_loss``.
    With ``resume``, the whole training state (net, optimiser, schedule, early stopping, random
    generators) is written there after every epoch and, if the file exists, training continues
    from it: an interrupted run ends with the same weights as an uninterrupted one."""
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.3, patience=2)
    best_state, best_score, best_epoch, history = None, -1.0, 0, []
    saved, start, stopped = {}, 1, False
    if resume and resume.exists():
        st = torch.load(resume, weights_only=True)
        net.load_state_dict(st["net"])
        opt.load_state_dict(st["opt"])
        sched.load_state_dict(st["sched"])
        best_state, best_score, best_epoch = st["best_state"], st["best_score"], st["best_epoch"]
        history, saved, stopped = st["history"], st["saved"], st["stopped"]
        _set_rng_state(batcher, st["rng"])
        start = st["epoch"] + 1
        console.log(f"{label}: resuming after epoch {st['epoch']} ({resume})")
    cols = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"))
    with Progress(*cols, console=console, transient=False) as prog:
        job = prog.add_task(label, total=epochs * steps, completed=(start - 1) * steps, info="")
        for ep in range(start, 0 if stopped else epochs + 1):
            net.train()
            t0, losses = time.time(), []
            for _ in range(steps):
                x, y = batcher.sample(batch)
                out, _ = net(x, torch.zeros(0))
                loss = loss_fn(task, out, y)
                if teacher is not None and distill > 0:
                    with torch.no_grad():
                        soft, _ = teacher(x, torch.zeros(0))
                    loss = (1 - distill) * loss + distill * distill_loss(task, out, soft, y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                if masks:
                    apply_masks(net, masks)
                losses.append(float(loss.detach()))
                prog.advance(job)
            net.eval()
            kw, summ = tune_and_score(task, net, valid)
            s = headline(task, summ)
            sched.step(s)
            history.append({"epoch": ep, "loss": float(np.mean(losses)), "valid": s, "seconds": time.time() - t0})
            msg = f"ep {ep} loss {np.mean(losses):.3f} valid {s:.3f} (best {max(s, best_score):.3f})"
            prog.update(job, info=msg)
            if not console.is_terminal:
                console.log(f"{label} {msg} {time.time() - t0:.0f}s")
            if ep in keep_epochs:
                saved[ep] = copy.deepcopy(net.state_dict())
            if ckpt_dir:
                torch.save(net.state_dict(), ckpt_dir / f"epoch{ep:03d}.pt")
            if s > best_score:
                best_score, best_state, best_epoch = s, copy.deepcopy(net.state_dict()), ep
            else:
                stopped = ep - best_epoch >= patience
            if resume:  # written whole then renamed, so an interruption never leaves half a file
                tmp = resume.with_suffix(".tmp")
                torch.save({"epoch": ep, "net": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                            "best_state": best_state, "best_score": best_score, "best_epoch": best_epoch,
                            "history": history, "saved": saved, "stopped": stopped, "rng": _rng_state(batcher)}, tmp)
                tmp.replace(resume)
            if stopped:
                break
    net.load_state_dict(best_state)
    return net, {"history": history, "best_epoch": best_epoch, "valid": best_score, "saved": saved,
                 "resumed_epochs": start - 1}


def apply_masks(net: torch.nn.Module, masks: dict) -> None:
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name in masks:
                p.mul_(masks[name])


def load_data(task: str, data: Path, limit: int | None = None, framing: Framing | None = None) -> dict[str, list[Item]]:
    """The three splits, with spectra on ``framing`` (the task spec's by default)."""
    out = {}
    for split in ("train", "valid", "test"):
        d = Path(data) / split
        if not d.is_dir():
            raise UserError(f"{d}: missing (expected {data}/train, valid and test)")
        out[split] = load_split(task, d, limit, framing)
    return out


def parse_framing(text: str) -> Framing:
    """``N_FFT:RIGHT`` (``--framing``) as a Framing, or a one-line error."""
    try:
        n, right = (int(v) for v in text.split(":"))
        if not (n >= 64 and n & (n - 1) == 0 and 0 <= right <= n):
            raise ValueError
    except ValueError:
        raise UserError(f"--framing {text!r}: want N_FFT:RIGHT, a power of two >= 64 and 0 <= RIGHT <= N_FFT "
                        "(e.g. 512:120)") from None
    return Framing(n, right)


def fit_framing(settings: dict) -> Framing:
    """The framing a ``train fit`` run trained on (runs before framings were centred)."""
    return Framing(*settings.get("framing", (CENTRED.n_fft, CENTRED.right)))


def fit_command(args) -> None:
    from train.export import export

    torch.set_num_threads(args.threads)
    seed_all(args.seed)
    out = Path(args.out)
    framing = parse_framing(args.framing) if getattr(args, "framing", None) else Framing.of(REGISTRY[args.task].features)
    if getattr(args, "lookahead", None) is not None and args.lookahead < framing.min_lookahead:
        raise UserError(f"--lookahead must be >= {framing.min_lookahead}: {args.task}'s window reaches "
                        f"{framing.ms_past:.0f} ms past its frame")
    key = {k: getattr(args, k) for k in FIT_SETTINGS} | {"data": str(args.data), "limit": args.limit,
                                                         "framing": [framing.n_fft, framing.right]}
    if getattr(args, "lookahead", None) is not None:
        key["lookahead"] = args.lookahead
    resume, started = out / "resume.pt", out / "started.json"
    if resume.exists():  # an interrupted fit: continue it, but only with the same settings
        try:
            was = json.loads(started.read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"{out}: holds an interrupted fit but not its settings ({e}); use another --out") from None
        diff = [k for k in key if was["settings"].get(k) != key[k]]
        if diff:
            raise UserError(f"{out}: holds an interrupted fit with other settings ({', '.join(diff)}); use another --out")
    else:
        (out / "ckpt").mkdir(parents=True, exist_ok=True)
        started.write_text(json.dumps({"settings": key}))
    t_start = time.time()
    data = load_data(args.task, args.data, args.limit, framing)
    net = build(args.task, args.width, getattr(args, "lookahead", None), framing)
    batcher = Batcher(args.task, data["train"], net.receptive_field, net.lookahead, seed=args.seed)
    net, info = train_epochs(args.task, net, batcher, data["valid"], args.epochs, args.lr, args.batch,
                             out / "ckpt", label=f"fit {args.task}", steps=args.steps, resume=resume)
    torch.save(net.state_dict(), out / "best.pt")
    kw, valid_summary = tune_and_score(args.task, net, data["valid"])
    _, test_summary = tune_and_score(args.task, net, data["test"], kw)
    # the card's training time also counts the epochs finished before an interruption
    train_s = time.time() - t_start + sum(h["seconds"] for h in info["history"][:info["resumed_epochs"]])
    card = export(args.task, net, out / f"{args.task}-dense.ts",
                  {"scores": {"test": test_summary, "valid": valid_summary}, "round": 0, "fraction_removed": 0.0,
                   "mode": "dense", "seed": args.seed, "train_seconds": round(train_s, 1),
                   "training_data": training_data(args.data)}, decoder=kw)
    settings = {k: getattr(args, k) for k in FIT_SETTINGS} | {"framing": key["framing"]}
    if getattr(args, "lookahead", None) is not None:
        settings["lookahead"] = args.lookahead
    res = {"task": args.task, "settings": settings, "params": card["params"], "flops_per_second": card["flops_per_second"],
           "valid": valid_summary, "test": test_summary, "decoder": kw, "best_epoch": info["best_epoch"],
           "history": info["history"], "train_seconds": round(train_s, 1), "bytes": card["bytes"]}
    (out / "metrics.json").write_text(json.dumps(res, indent=1, default=str))
    console.print(f"[green]{args.task}[/]: test {HEADLINE[args.task]} = "
                  f"{test_summary[HEADLINE[args.task]]:.3f}, {card['params']} params, {train_s / 60:.1f} min")
