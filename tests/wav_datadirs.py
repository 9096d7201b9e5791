"""Kaldi data dirs of audio files for the tests of the feature and augmentation
steps: a data dir of given clips, and small stand-ins for the MUSAN noise, music
and speech sets and the room impulse responses."""
from __future__ import annotations

import numpy as np
import soundfile as sf


def write_wav_datadir(d, wav):
    """wav.scp, utt2spk and spk2utt of ``{utt: audio path}`` in ``d``, each utterance's speaker
    the part of its id before the first '-'; returns the sorted utterance ids."""
    d.mkdir(parents=True, exist_ok=True)
    utts = sorted(wav)
    (d / "wav.scp").write_text("".join(f"{u} {wav[u]}\n" for u in utts))
    (d / "utt2spk").write_text("".join(f"{u} {u.split('-')[0]}\n" for u in utts))
    spk = {}
    for u in utts:
        spk.setdefault(u.split("-")[0], []).append(u)
    (d / "spk2utt").write_text("".join(f"{s} {' '.join(us)}\n" for s, us in sorted(spk.items())))
    return utts


def write_noise_datadirs(root, speech_files):
    """Small stand-ins for the augmentation corpora under ``root``: data dirs musan_noise
    (white noise), musan_music (tones), musan_speech (``speech_files``) and rirs (two
    rooms' impulse responses), each recording its own speaker."""
    rng = np.random.default_rng(0)
    a = root / "audio"
    a.mkdir(parents=True)

    def dd(name, items):
        write_wav_datadir(root / name, dict(items))
        (root / name / "utt2spk").write_text("".join(f"{u} {u}\n" for u, _ in sorted(items)))
        (root / name / "spk2utt").write_text("".join(f"{u} {u}\n" for u, _ in sorted(items)))

    def w(name, x):
        sf.write(str(a / name), x.astype(np.float32), 16000)
        return str(a / name)
    dd("musan_noise", [(f"noise{i}", w(f"n{i}.wav", 0.05 * rng.standard_normal(12000 + 8000 * i))) for i in range(3)])
    dd("musan_music", [(f"music{i}", w(f"m{i}.wav", 0.1 * np.sin(np.arange(30000) * 0.05 * (i + 1)))) for i in range(2)])
    dd("musan_speech", [(f"speech{i}", f) for i, f in enumerate(speech_files)])
    h = rng.standard_normal(3000) * np.exp(-np.arange(3000) / 500) * 0.2
    h[20] = 1
    dd("rirs", [("smallroom-Room001-00001", w("r1.wav", h)), ("mediumroom-Room002-00001", w("r2.wav", h[::-1].copy()))])
