"""Singers made from recorded voices (train/speech.py): the f0 labels are what the audio sounds."""

from __future__ import annotations

import numpy as np
import pytest

from edgemir.labels import SAMPLE_RATE


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    import os

    os.environ["EDGEMIR_SPEECH_CACHE"] = str(tmp_path_factory.mktemp("speech"))
    from train import speech

    speech.analysis.cache_clear()
    yield speech
    speech.analysis.cache_clear()
    os.environ.pop("EDGEMIR_SPEECH_CACHE")


@pytest.mark.parametrize("sex", ["female", "male"])
def test_labels_are_the_f0_the_resynthesis_sounds(speech, sex):
    import librosa

    rng = np.random.default_rng(5)
    # steady notes with rests: each takes a syllable of a spoken lyric line
    notes = [((62 if sex == "female" else 50) + d, 0.3 + 0.6 * i, 0.8 + 0.6 * i) for i, d in enumerate([0, 4, 7, 5])]
    audio, f0, onsets = speech.sing(rng, notes, 3.0, sex)
    assert audio.dtype == np.float32 and len(audio) == 3 * SAMPLE_RATE and np.isfinite(audio).all()
    assert len(f0) == 300 and len(onsets) == 4 and all(0.0 <= t < 3.0 for t in onsets)
    voiced = f0 > 0
    assert 0.4 < voiced.mean() < 0.9  # the notes are sung; rests and consonants are not
    for m, a, b in notes:  # every note's labels sit on its pitch (vibrato and scoops stay within 150 cents)
        k = np.arange(int(a * 100), int(b * 100))
        c = 1200 * np.log2(f0[k][voiced[k]] / (440 * 2 ** ((m - 69) / 12)))
        assert voiced[k].mean() > 0.7 and np.median(np.abs(c)) < 60, (m, voiced[k].mean(), np.median(c))
    # an independent tracker hears the labelled f0 on the frames it calls voiced
    est, ok, _ = librosa.pyin(audio.astype(np.float64), fmin=60, fmax=1000, sr=SAMPLE_RATE, frame_length=1024,
                              hop_length=160, center=True)
    n = min(len(est), len(f0))
    both = ok[:n] & voiced[:n]
    cents = 1200 * np.abs(np.log2(est[:n][both] / f0[:n][both]))
    assert both.sum() > 100 and np.mean(cents < 50) > 0.9, (both.sum(), np.mean(cents < 50))


def test_same_seed_same_audio_and_test_lines_apart(speech):
    notes = [(57, 0.2, 1.0), (60, 1.1, 1.9)]
    a1, f1, _ = speech.sing(np.random.default_rng(9), notes, 2.0, "male")
    a2, f2, _ = speech.sing(np.random.default_rng(9), notes, 2.0, "male")
    assert np.array_equal(a1, a2) and np.array_equal(f1, f2)
    assert speech.lyric(0) != speech.lyric(speech.N_LINES - 1)
    t, _, _ = speech.sing(np.random.default_rng(9), notes, 2.0, "male", test=True)
    assert not np.array_equal(a1, t)  # test splits sing other lines


def test_a_missing_festival_is_a_clear_error(speech, monkeypatch, tmp_path):
    from edgemir.errors import UserError

    monkeypatch.setattr(speech.shutil, "which", lambda name: None)
    with pytest.raises(UserError, match="festival"):
        speech._tts("kal_diphone", "la la", tmp_path / "x.wav")
