"""Front-end stream/batch equality, model shapes, receptive fields and look-ahead."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edgemir.frontend import CAUSAL, CENTRED, Framing, StreamingSTFT, bank_for, batch_spectrum
from edgemir.labels import CHORDS, FAMILIES, PITCH_BINS, SAMPLE_RATE
from edgemir.tasks import REGISTRY
from train.nets import build, count_params, task_config


@pytest.mark.parametrize("framing", [CENTRED, CAUSAL])
def test_stream_equals_batch_for_any_block_sizes(framing):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(23456).astype(np.float32) * 0.3
    batch = batch_spectrum(torch.from_numpy(x), framing)
    s, parts, i = StreamingSTFT(framing), [], 0
    while i < len(x):
        n = int(rng.integers(1, 900))
        parts.append(s.push(x[i:i + n]))
        i += n
    parts.append(s.flush())
    stream = torch.cat(parts).abs()
    assert stream.shape == batch.shape == (1 + len(x) // 160, framing.n_bins)
    assert torch.equal(stream, batch)


@pytest.mark.parametrize("framing, first", [(CENTRED, 47), (CAUSAL, 50)])
def test_a_frame_sees_at_most_its_framings_reach_past_its_time(framing, first):
    """A click at frame 50's time (sample 8000): the centred window (32 ms past its frame) shows it from
    frame 47, the causal one (10 ms past) from frame 50, its own frame, never before."""
    x = np.zeros(16000, np.float32)
    x[8000] = 1.0
    spec = batch_spectrum(torch.from_numpy(x), framing)
    lit = np.flatnonzero(spec.sum(1).numpy() > 1e-6)
    assert lit[0] == first and lit[-1] == (8000 + framing.left) // 160  # (the window's first sample weighs 0)


def test_framing_cards_round_trip_and_old_cards_read_as_centred():
    assert Framing.from_card(CAUSAL.card()) == CAUSAL
    old = {"sample_rate": 16000, "hop": 160, "n_fft": 1024, "window": "hann", "center_pad": 512}
    assert Framing.from_card(old) == CENTRED
    for bad in (None, {**old, "hop": 256}, {**old, "n_fft": 1000}, {**old, "center_pad": 2000}):
        with pytest.raises(ValueError):
            Framing.from_card(bad)


def test_a_sine_lands_in_the_right_pitch_bin():
    f = 440.0
    x = np.sin(2 * np.pi * f * np.arange(16000) / 16000).astype(np.float32)
    spec = batch_spectrum(torch.from_numpy(x))
    bank = torch.from_numpy(bank_for(REGISTRY["pitch"].features))
    feats = spec @ bank.t()
    peak = int(feats[50].argmax())
    cents = 1200 * np.log2(f / 32.703195662574764)
    assert abs(peak * 20 - cents) <= 20


EXPECTED = {"pitch": (PITCH_BINS + 1, 5, -1), "onset": (1, 11, 1), "drums": (3, 11, 3), "chord": (len(CHORDS), 13, 6),
            "instrument": (len(FAMILIES), 9, 4)}


@pytest.mark.parametrize("task", list(EXPECTED))
def test_model_shapes_receptive_field_and_lookahead(task):
    n_out, rf, la = EXPECTED[task]
    net = build(task).eval()
    cfg = task_config(task)
    assert (net.receptive_field, net.lookahead) == (rf, la)
    # the pitch salience CNN shares its kernels over every bin: few parameters, many FLOPs
    assert (2e4 if task == "pitch" else 1e5) < count_params(net) < 5e6
    T = 40
    x = torch.randn(2, cfg.n_features, T)
    y, _ = net(x, torch.zeros(0))
    assert y.shape == (2, n_out, T - rf + 1)
    # the receptive field is exact: changing input frame j changes only outputs that can see it
    with torch.no_grad():
        x2 = x.clone()
        j = 20
        x2[:, :, j] += 5.0
        y2, _ = net(x2, torch.zeros(0))
        changed = (y2 - y).abs().amax(dim=(0, 1)) > 1e-6
    idx = torch.nonzero(changed).flatten()
    if cfg.gru:  # a recurrent net carries the change forward
        assert idx.min() == j - rf + 1
    else:
        assert idx.min() == j - rf + 1 and idx.max() == j
    # output k belongs to input frame k + rf - 1 - lookahead: it sees `lookahead` future frames
    assert (j - (idx.min() + rf - 1 - la)) == la


@pytest.mark.parametrize("task,key,semitones", [("instrument", 4, 2.0), ("instrument", -3, -1.5), ("chord", 2, -1.0)])
def test_training_pitch_shift_matches_a_shifted_note(task, key, semitones):
    """The bank a training batch uses for a pitch shift gives the features of the shifted note."""
    from train.dataset import Batcher, Item

    def note(f0: float) -> torch.Tensor:
        t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
        x = sum(a * np.sin(2 * np.pi * k * f0 * t) for k, a in ((1, 0.5), (2, 0.3), (3, 0.2)))
        return batch_spectrum(torch.from_numpy(x).float())[None]

    spec = note(440.0)
    item = Item("a4", spec[0].half(), np.zeros(spec.shape[1], np.int64), np.zeros(spec.shape[1]), Path("a4"))
    batcher = Batcher(task, [item], 1, 0)
    shifted = batcher.features(spec, key)[0, :, 50]
    plain = batcher.features(spec, 0)[0, :, 50]
    truth = batcher.features(note(440.0 * 2 ** (semitones / 12)), 0)[0, :, 50]
    strong = truth > truth.max() - 4  # bands within ~17 dB of the peak
    assert shifted.argmax() == truth.argmax() != plain.argmax()
    assert (shifted - truth)[strong].abs().max() < (1.5 if task == "chord" else 0.5)
    assert (plain - truth)[strong].abs().max() > 1.0


@pytest.mark.parametrize("which", ["tiny", "shipped"])
def test_incremental_step_equals_batch_forward_for_every_task(which, tiny_bundles):
    """``step`` (each layer caching its own context; the engine's path) on blocks of any size gives the
    outputs of ``forward`` on the whole sequence, for every task, through a TorchScript round trip."""
    from edgemir.bundle import load_bundle

    folder = tiny_bundles if which == "tiny" else Path(__file__).resolve().parents[1] / "edgemir" / "models"
    g = torch.Generator().manual_seed(0)
    for path in sorted(folder.glob("*.ts")):
        b = load_bundle(path)
        m = b.module
        spec = torch.rand(120, Framing.from_card(b.card["frontend"]).n_bins, generator=g) ** 4
        with torch.no_grad():
            want, _ = m(m.features(spec).unsqueeze(0), m.initial_state())
            state, outs, i = m.initial_stream(), [], 0
            for b in [1, 1, 2, 5, 1, 13, 3, 40, 1, 1, 52]:
                y, state = m.step(spec[i:i + b], state)
                outs.append(y)
                i += b
            got = torch.cat(outs, 2)
        assert i == len(spec) and got.shape == want.shape, (path.name, got.shape, want.shape)
        assert torch.allclose(got, want, atol=2e-5), (path.name, float((got - want).abs().max()))
