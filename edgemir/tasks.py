"""The task registry: one spec per task, read by the engine, the sinks, the display and ``train/``.

A task is what its spec says: its output classes, the activation of its network, the features it
reads, its decoder and the grid that tunes it, its headline metric, its loss, its annotation format
(the file ``analyze`` writes and the training references use), its OSC address and its live block.
Code elsewhere follows the spec's ``format`` (what kind of answer the task gives), never its name,
so a sixth task of a known kind (beats: ``times``; key: ``segments``) is one entry here.

Formats:
  ``f0``        a frequency per frame, negative when unvoiced (``.f0.csv``: time, Hz)
  ``times``     event times of one class (``.onsets``: one time per line)
  ``events``    event times of several classes (``.drums``: time, class)
  ``segments``  labelled time spans (``.lab``: start, end, label)
  ``label``     one label per file, with per-window labels on long files (``.label``)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgemir.decoders import ChordDecoder, Decoder, DrumDecoder, InstrumentDecoder, OnsetDecoder, PitchDecoder
from edgemir.frontend import CAUSAL
from edgemir.labels import CHORDS, DRUM_CLASSES, FAMILIES, PITCH_FMIN, TASKS

FORMATS = ("f0", "times", "events", "segments", "label")
THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# peak-picking windows (frames each side; 0 decides within the frame)
WINDOWS = (0, 1, 2)


@dataclass(frozen=True)
class Task:
    name: str
    format: str  # one of FORMATS
    suffix: str  # annotation / result file suffix
    classes: tuple[str, ...]  # event classes, segment or file labels; () for f0
    activation: str  # "sigmoid" (independent units) or "softmax" (one class per frame)
    features: dict  # the front-end's feature spec for training (edgemir.frontend.bank_for; its framing:
    # Framing.of); a bundle's card carries its own, which the engine follows
    decoder: type[Decoder]
    grid: tuple[dict, ...]  # decoder settings tried when a model is tuned (train/fit.py)
    headline: str  # the key of the mir_eval summary that ranks models
    tune: str  # the key decoder settings are tuned for (the headline, unless it ignores a setting or misjudges one)
    loss: str  # "salience" (20-cent salience + voicing), "bce" (per-class events), "ce" (one class per frame)
    osc: str  # OSC address of its events
    # edgemir.toml [thresholds] key -> (decoder argument, conversion, check, what the check wants)
    config: dict = field(default_factory=dict)
    live_block: int | None = None  # hops per model call live (None: the --block setting)
    refine: bool = False  # the STFT-phase pitch refiner runs on its outputs
    per_class_thresholds: bool = False  # tuning picks one threshold per class

    @property
    def sigmoid(self) -> bool:
        return self.activation == "sigmoid"


_MEL80 = {"kind": "mel", "n_mels": 80}
# onsets read the causal framing (a 32 ms window ending 7.5 ms past the frame: edgemir.frontend), so a hit is
# reported 17.5 ms after its frame; the other tasks the centred one (64 ms windows). Drums on the causal framing
# lost 5-10 points on real recordings (most in full-band mixes) and as many on the synthetic split, so they keep
# the centred one (docs/live-design.md).
_MEL80_CAUSAL = {**_MEL80, "n_fft": CAUSAL.n_fft, "right": CAUSAL.right}


def _unit(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1


def _per_class(classes: tuple[str, ...]):
    return (lambda v: isinstance(v, list) and len(v) == len(classes) and all(_unit(x) for x in v),
            f"{len(classes)} numbers in 0..1 ({', '.join(classes)})")


def _floats(v) -> tuple[float, ...]:
    return tuple(float(x) for x in v)
_EVENTS_GRID = tuple({"threshold": t, "window": w} for w in WINDOWS for t in THRESHOLDS)
# pitch voicing: a threshold, and optionally a lower one for the frames the refiner finds steady (held notes)
_PITCH_GRID = tuple({"threshold": t} for t in THRESHOLDS) + tuple(
    {"threshold": t, "steady": s} for t in THRESHOLDS for s in (0.3, 0.5, 0.7) if s < t)

REGISTRY: dict[str, Task] = {t.name: t for t in (
    # 20-cent bins from C1: the salience axis itself (input bin k = output bin k). RPA ignores the voicing
    # decision (it scores unvoiced guesses too), so voicing thresholds are tuned on overall accuracy.
    Task("pitch", "f0", ".f0.csv", (), "sigmoid",
         {"kind": "logfreq", "bins_per_octave": 60, "n_bins": 420, "fmin": PITCH_FMIN}, PitchDecoder,
         _PITCH_GRID, "rpa", "overall_accuracy", "salience", "/edgemir/pitch",
         {"pitch_voicing": ("threshold", float, _unit, "a number in 0..1")}, live_block=2, refine=True),
    Task("onset", "times", ".onsets", ("onset",), "sigmoid", _MEL80_CAUSAL, OnsetDecoder, _EVENTS_GRID, "f", "f", "bce",
         "/edgemir/onset", {"onset": ("threshold", float, _unit, "a number in 0..1")}, live_block=1),
    # 24 bins/octave from C2 over 6 octaves (a pitch shift is a crop shift of 2 bins per semitone)
    Task("chord", "segments", ".lab", CHORDS, "softmax",
         {"kind": "logfreq", "bins_per_octave": 24, "n_bins": 144, "fmin": PITCH_FMIN * 2}, ChordDecoder,
         tuple({"stay": s, "min_frames": m} for s in (0.9, 0.99, 0.995) for m in (5, 10, 20, 30)), "majmin", "majmin",
         "ce", "/edgemir/chord",
         {"chord_min_frames": ("min_frames", int, lambda v: isinstance(v, int) and v >= 1, "an integer >= 1")}),
    Task("drums", "events", ".drums", DRUM_CLASSES, "sigmoid", _MEL80, DrumDecoder,
         tuple({"thresholds": (t,) * len(DRUM_CLASSES), "window": w} for w in WINDOWS for t in THRESHOLDS),
         "mean_f", "pooled_mean_f", "bce", "/edgemir/drum", {"drums": ("thresholds", _floats, *_per_class(DRUM_CLASSES))},
         live_block=1,
         per_class_thresholds=True),
    Task("instrument", "label", ".label", FAMILIES, "softmax", {"kind": "mel", "n_mels": 64}, InstrumentDecoder,
         ({},), "accuracy", "accuracy", "ce", "/edgemir/instrument"),
)}

assert tuple(REGISTRY) == TASKS, "the registry lists the tasks of the bundle contract, in its order"
HEADLINE: dict[str, str] = {t.name: t.headline for t in REGISTRY.values()}


def task(name: str) -> Task:
    """The spec of a task by name (KeyError names the known tasks)."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r} (known: {', '.join(TASKS)})") from None


def make_decoder(name: str, **kw) -> Decoder:
    """The task's decoder with its settings; its events carry the task's name."""
    dec = REGISTRY[name].decoder(**kw)
    dec.task = name
    return dec
