"""The built-in demo corpus: synthetic speech (espeak-ng) so the recipe runs on
a machine with no corpora.

It imitates the real setting at a tiny scale:

- ``pretrain/``: speakers for x-vector training (VoxCeleb's role): varied
  sentences, every emotion, many voices.
- ``emotion/``: a disjoint set of speakers (half female) saying the 12
  CREMA-D sentences in 4 emotions (neutral, happy, sad, angry) rendered
  through prosody: pitch level and range, rate, loudness, pauses, and voice
  quality (tilt, a little saturation for anger); repetitions have jitter.
  A speaker-independent train/dev/test split is a column of the manifest.
- ``musan/{noise,music,speech}/synth/*.wav``: generated noises, music-like
  tones and espeak babble sources (voices of neither speaker set), laid out
  like MUSAN.
- ``RIRS_NOISES/simulated_rirs/{smallroom,mediumroom}/RoomNNN/RoomNNN-NNNNN.wav``:
  synthetic room impulse responses (direct path, early reflections, an
  exponentially decaying diffuse tail), laid out like RIRS_NOISES.

A speaker is an espeak-ng voice+variant with its own pitch base and rate,
then a vocal-tract-length warp (resampling that scales formants and pitch
together), a spectral tilt and a resonance peak, so the x-vector has
speaker cues beyond the synthesiser's variant.

Everything is deterministic from the seed: each utterance's parameters are
drawn in the parent process in a fixed order, workers only render them.
Manifests ``pretrain.csv`` and ``emotion.csv`` (``path,speaker,emotion,utt,gender[,split]``,
paths relative to the corpus root) are read by ``local/prepare_manifest.py``.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000
ESPEAK_SR = 22050
VERSION = 1
EMOTIONS = ("neutral", "happy", "sad", "angry")

CREMA_SENTENCES = {
    "IEO": "It's eleven o'clock.",
    "TIE": "That is exactly what happened.",
    "IOM": "I'm on my way to the meeting.",
    "IWW": "I wonder what this is about.",
    "TAI": "The airplane is almost full.",
    "MTI": "Maybe tomorrow it will be cold.",
    "IWL": "I would like a new alarm clock.",
    "ITH": "I think I have a doctor's appointment.",
    "DFA": "Don't forget a jacket.",
    "ITS": "I think I've seen this before.",
    "TSI": "The surface is slick.",
    "WSI": "We'll stop in a couple of minutes.",
}

# Varied sentences for the pre-training speakers (none of the CREMA-D ones).
PRETRAIN_SENTENCES = (
    "The quick brown dog jumped over the garden fence this morning.",
    "Please remember to close the window before you leave the office.",
    "We walked along the river until the sun went down.",
    "My brother bought a bright red bicycle last summer.",
    "The library opens at nine and closes early on Sundays.",
    "Could you pass me the salt and the pepper, please?",
    "A cold wind blew across the empty parking lot.",
    "She finished the report an hour before the deadline.",
    "There are seven apples and three oranges in the basket.",
    "The train to the city was delayed by twenty minutes.",
    "He painted the kitchen a pale shade of green.",
    "Our neighbours are planning a party for the weekend.",
    "The children laughed at the clown's silly tricks.",
    "I left my umbrella on the bus again.",
    "The old clock in the hall stopped at midnight.",
    "They sailed to the island in a small wooden boat.",
    "Fresh bread smells wonderful early in the morning.",
    "The museum has a new exhibition about ancient Egypt.",
    "Turn left at the bakery and walk two more blocks.",
    "The concert was cancelled because of the storm.",
    "Every student must hand in the homework on Friday.",
    "The cat sleeps on the warm windowsill all afternoon.",
    "We need more paper for the printer upstairs.",
    "His grandmother tells the most wonderful stories.",
    "The mountain road is closed during the winter.",
    "Nobody knows where the old map was hidden.",
    "The soup needs a little more salt and some garlic.",
    "A flock of geese flew south over the lake.",
    "The doctor said I should drink more water.",
    "Our team won the final match by a single goal.",
    "The shop around the corner sells excellent coffee.",
    "Rain is expected for most of the coming week.",
    "She plays the violin in the city orchestra.",
    "The package arrived three days later than promised.",
    "Five little ducks swam across the quiet pond.",
    "The lecture about volcanoes was surprisingly interesting.",
    "Could you repeat the last number one more time?",
    "The farmer planted corn and beans in the north field.",
    "Please write your name at the top of the page.",
    "The lights in the theatre slowly went dark.",
)

# English voices that apply a +variant (en-gb ignores it: machines.md).
BASES = ("en-us", "en", "en-029", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan",
         "en-gb-x-gbcwmd", "en-us-nyc")
FEMALE_VARIANTS = ("f1", "f2", "f3", "f4", "f5", "Annie", "belinda", "Andrea", "Alicia", "aunty")
MALE_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "edward", "max")
# Babble sources: other languages' voices reading English, used by no speaker.
BABBLE_VOICES = ("de", "fr", "es", "it", "nl", "pl", "sv", "pt", "da", "fi")

# Prosody of each emotion (multipliers / offsets applied to a speaker's base):
#   pitch: SSML pitch change in %, range: SSML range, rate: speed factor,
#   level: RMS in dBFS, gap: espeak word gap (10 ms units), tilt: extra
#   spectral tilt (+ brighter), drive: saturation amount (0 = none).
EMOTION_STYLE = {
    "neutral": dict(pitch=0, range="medium", rate=1.00, level=-22.0, gap=0, tilt=0.0, drive=0.0),
    "happy":   dict(pitch=25, range="x-high", rate=1.12, level=-19.0, gap=0, tilt=0.15, drive=0.0),
    "sad":     dict(pitch=-18, range="x-low", rate=0.78, level=-28.0, gap=6, tilt=-0.35, drive=0.0),
    "angry":   dict(pitch=12, range="high", rate=1.18, level=-15.0, gap=0, tilt=0.35, drive=2.5),
}

SIZES = {
    # pretrain speakers x utts; emotion speakers x per-emotion utts; split sizes
    # (train/dev/test speakers, each half female); noise/music/speech files; rooms x rirs.
    "full": dict(n_pre=32, pre_utts=20, n_emo=16, emo_utts=8, split=(10, 2, 4),
                 noise=8, music=6, speech=8, rooms=4, rirs_per_room=3),
    "small": dict(n_pre=12, pre_utts=6, n_emo=8, emo_utts=2, split=(4, 2, 2),
                  noise=3, music=3, speech=7, rooms=2, rirs_per_room=2),
}


@dataclass
class Voice:
    spk: str
    gender: str
    espeak: str        # voice+variant
    pitch: int         # espeak -p base (0..99)
    speed: int         # espeak -s base (words per minute)
    warp: float        # vocal-tract warp: >1 raises formants and pitch
    tilt: float        # first-order tilt coefficient (+ brighter, - darker)
    peak_hz: float     # a speaker-specific resonance
    peak_db: float


def make_voices(rng: np.random.Generator, n_pre: int, n_emo: int) -> tuple[list[Voice], list[Voice]]:
    """Draw distinct voices: each speaker gets its own (base, variant) pair."""
    combos = {}
    for g, variants in (("f", FEMALE_VARIANTS), ("m", MALE_VARIANTS)):
        c = [(b, v) for v in variants for b in BASES]
        order = rng.permutation(len(c))
        # Spread variants: take them in rounds so neighbours differ by variant.
        c = [c[i] for i in order]
        by_var: dict[str, list] = {}
        for b, v in c:
            by_var.setdefault(v, []).append((b, v))
        rounds = []
        while any(by_var.values()):
            for v in variants:
                if by_var[v]:
                    rounds.append(by_var[v].pop())
        combos[g] = rounds

    def draw(prefix: str, n: int, offset: dict) -> list[Voice]:
        out = []
        for i in range(n):
            g = "f" if i % 2 == 0 else "m"
            base, var = combos[g][offset[g]]
            offset[g] += 1
            if g == "f":
                pitch, warp = int(rng.integers(40, 80)), float(rng.uniform(1.00, 1.14))
            else:
                pitch, warp = int(rng.integers(20, 60)), float(rng.uniform(0.86, 1.00))
            out.append(Voice(spk=f"{prefix}{i + 1:02d}", gender=g, espeak=f"{base}+{var}",
                             pitch=pitch, speed=int(rng.integers(145, 190)), warp=round(warp, 3),
                             tilt=float(rng.uniform(-0.5, 0.5)),
                             peak_hz=float(rng.uniform(700, 3800)),
                             peak_db=float(rng.uniform(-8, 8))))
        return out

    offset = {"f": 0, "m": 0}
    emo = draw("demo_e", n_emo, offset)       # emotion speakers first: fixed across sizes' prefix
    pre = draw("demo_p", n_pre, offset)
    return pre, emo


# ------------------------------------------------------------------ rendering
def _espeak(text: str, voice: str, pitch: int, speed: int, gap: int,
            ssml_pitch: int, ssml_range: str) -> np.ndarray:
    ssml = (f'<speak><prosody pitch="{ssml_pitch:+d}%" range="{ssml_range}">'
            f"{text}</prosody></speak>")
    cmd = ["espeak-ng", "-m", "-v", voice, "-p", str(pitch), "-s", str(speed),
           "-g", str(gap), "--stdout", ssml]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    if proc.returncode != 0 or not proc.stdout:
        raise RuntimeError(f"espeak-ng failed ({' '.join(cmd[:8])}...): "
                           f"{proc.stderr.decode(errors='replace').strip()}")
    x, sr = sf.read(io.BytesIO(proc.stdout), dtype="float64")
    if x.ndim > 1:
        x = x.mean(axis=1)
    assert sr == ESPEAK_SR, sr
    return x


def _warp_to_16k(x: np.ndarray, warp: float) -> np.ndarray:
    """Play the 22.05 kHz samples at ``22050*warp`` Hz and resample to 16 kHz:
    formants and pitch scale by ``warp``, duration by ``1/warp``."""
    from scipy.signal import resample_poly

    down = int(round(441 * warp))
    return resample_poly(x, 320, down)


def _peaking(x: np.ndarray, f0: float, gain_db: float, q: float = 1.2) -> np.ndarray:
    """RBJ peaking-EQ biquad at ``f0`` Hz."""
    from scipy.signal import lfilter

    a = 10 ** (gain_db / 40)
    w = 2 * np.pi * f0 / SR
    alpha = np.sin(w) / (2 * q)
    b = [1 + alpha * a, -2 * np.cos(w), 1 - alpha * a]
    aa = [1 + alpha / a, -2 * np.cos(w), 1 - alpha / a]
    return lfilter(b, aa, x)


def _tilt(x: np.ndarray, t: float) -> np.ndarray:
    """First-order tilt: t>0 pre-emphasis (brighter), t<0 one-pole smoothing."""
    from scipy.signal import lfilter

    t = float(np.clip(t, -0.9, 0.9))
    if t >= 0:
        return lfilter([1.0, -t], [1.0], x) / (1.0 - 0.5 * t)
    return lfilter([1.0 + t], [1.0, t], x)


def render_utterance(job: dict) -> dict:
    """Synthesise one utterance described by ``job`` and write it as 16-bit
    16 kHz mono WAV at ``job['out']``. Returns {utt, dur}."""
    rng = np.random.default_rng(job["noise_seed"])
    x = _espeak(job["text"], job["voice"], job["pitch"], job["speed"], job["gap"],
                job["ssml_pitch"], job["ssml_range"])
    x = _warp_to_16k(x, job["warp"])
    x = _tilt(x, job["tilt"])
    x = _peaking(x, job["peak_hz"], job["peak_db"])
    if job["drive"] > 0:  # pressed/harsh voice: soft saturation
        d = job["drive"]
        x = np.tanh(d * x / (np.max(np.abs(x)) + 1e-9)) / np.tanh(d)
    # trim espeak's own silence, then add our own pauses at a low noise floor
    env = np.abs(x) > 0.01 * np.max(np.abs(x))
    idx = np.flatnonzero(env)
    if idx.size:
        x = x[max(0, idx[0] - 160): idx[-1] + 160]
    rms = np.sqrt(np.mean(x ** 2)) + 1e-12
    x = x * (10 ** (job["level"] / 20) / rms)
    lead, tail = (int(job["lead"] * SR), int(job["tail"] * SR))
    y = np.concatenate([np.zeros(lead), x, np.zeros(tail)])
    y = y + rng.normal(0.0, 10 ** (-62 / 20), y.size)   # room tone at -62 dBFS
    peak = np.max(np.abs(y))
    if peak > 0.99:
        y *= 0.99 / peak
    out = Path(job["out"])
    out.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(out), y.astype(np.float32), SR, subtype="PCM_16")
    return {"utt": job["utt"], "dur": y.size / SR}


def _utt_job(rng: np.random.Generator, v: Voice, emo: str, text: str, utt: str, out: str,
             jitter: float = 1.0) -> dict:
    st = EMOTION_STYLE[emo]
    j = lambda s: float(rng.normal(0.0, s * jitter))
    return dict(
        utt=utt, out=out, text=text, voice=v.espeak,
        pitch=int(np.clip(v.pitch + j(3), 0, 99)),
        speed=int(np.clip(v.speed * st["rate"] * (1 + j(0.04)), 80, 320)),
        gap=int(max(0, st["gap"] + round(j(1.0)))) if st["gap"] else 0,
        ssml_pitch=int(round(st["pitch"] + j(4))), ssml_range=st["range"],
        warp=v.warp, tilt=float(v.tilt + st["tilt"] + j(0.03)),
        peak_hz=v.peak_hz, peak_db=v.peak_db, drive=st["drive"],
        level=float(st["level"] + j(1.0)),
        lead=float(rng.uniform(0.10, 0.30)), tail=float(rng.uniform(0.10, 0.30)),
        noise_seed=int(rng.integers(2 ** 31)),
    )


# ----------------------------------------------------------- noise and RIRs
def _colored_noise(rng, n: int, exponent: float) -> np.ndarray:
    """Noise with power spectrum ~ 1/f^exponent (0 white, 1 pink, 2 brown)."""
    spec = np.fft.rfft(rng.normal(size=n))
    f = np.fft.rfftfreq(n, 1 / SR)
    f[0] = f[1]
    spec /= f ** (exponent / 2)
    x = np.fft.irfft(spec, n)
    return x / (np.std(x) + 1e-12)


def make_noise(rng, kind: int, dur: float) -> np.ndarray:
    n = int(dur * SR)
    t = np.arange(n) / SR
    k = kind % 6
    if k == 0:
        x = _colored_noise(rng, n, 0.0)                    # white
    elif k == 1:
        x = _colored_noise(rng, n, 1.0)                    # pink
    elif k == 2:
        x = _colored_noise(rng, n, 2.0)                    # brown (rumble)
    elif k == 3:                                           # mains hum + hiss
        f0 = rng.choice([50.0, 60.0])
        x = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6.3)) / h for h in range(1, 8))
        x = x + 0.3 * _colored_noise(rng, n, 0.5)
    elif k == 4:                                           # fan: band noise + blade tone
        x = _peaking(_colored_noise(rng, n, 1.0), rng.uniform(200, 800), 15, q=2)
        x = x + 0.5 * np.sin(2 * np.pi * rng.uniform(90, 180) * t)
    else:                                                  # clatter: decaying clicks
        x = 0.05 * _colored_noise(rng, n, 0.0)
        for pos in rng.integers(0, n - 2000, size=int(dur * 4)):
            L = int(rng.integers(400, 2000))
            x[pos:pos + L] += rng.normal(size=L) * np.exp(-np.arange(L) / (L / 5)) * rng.uniform(1, 4)
    # slow amplitude movement so it is not stationary
    x = x * (1 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * t + rng.uniform(0, 6.3)))
    return 0.1 * x / (np.std(x) + 1e-12)


def make_music(rng, dur: float) -> np.ndarray:
    """Notes of a random scale with harmonics and envelopes, a bass line and
    a beat: enough structure to be unlike noise and unlike speech."""
    n = int(dur * SR)
    x = np.zeros(n)
    bpm = rng.uniform(70, 150)
    beat = 60.0 / bpm
    root = rng.uniform(110, 260)
    scale = np.array([0, 2, 4, 5, 7, 9, 11, 12])
    timbre = rng.uniform(0.2, 0.9, size=6) ** np.arange(1, 7)
    t0 = 0.0
    while t0 < dur:
        L = beat * rng.choice([0.5, 1, 1, 2])
        m = int(min(L, dur - t0) * SR)
        if m <= 0:
            break
        tt = np.arange(m) / SR
        env = np.minimum(1, tt / 0.01) * np.exp(-tt / (0.6 * L + 0.05))
        f = root * 2 ** (rng.choice(scale) / 12) * rng.choice([1, 2])
        note = sum(a * np.sin(2 * np.pi * f * (h + 1) * tt) for h, a in enumerate(timbre))
        bass = 0.6 * np.sin(2 * np.pi * root / 2 * tt)
        s = int(t0 * SR)
        x[s:s + m] += env * (note + bass)
        t0 += L
    for k in range(int(dur / beat)):  # kick drum-ish thumps on the beat
        s = int(k * beat * SR)
        m = min(1600, n - s)
        tt = np.arange(m) / SR
        x[s:s + m] += 1.5 * np.sin(2 * np.pi * 60 * tt) * np.exp(-tt / 0.03)
    return 0.1 * x / (np.std(x) + 1e-12)


def make_rir(rng, rt60: float, room_dim: float) -> np.ndarray:
    """Synthetic RIR: a delayed direct path, a few early reflections and a
    diffuse tail decaying 60 dB over ``rt60`` s, darker as it decays."""
    from scipy.signal import lfilter

    n = int(max(0.25, 1.2 * rt60) * SR)
    h = np.zeros(n)
    d0 = int(rng.uniform(0.002, 0.012) * SR)
    h[d0] = 1.0
    for _ in range(int(rng.integers(6, 14))):   # early reflections, 2..(room) ms later
        d = d0 + int(rng.uniform(0.002, 0.004 * room_dim) * SR)
        if d < n:
            h[d] += rng.uniform(-0.6, 0.6)
    t = np.arange(n) / SR
    tail = rng.normal(size=n) * np.exp(-6.9 * t / rt60)
    tail = lfilter([0.6], [1, -0.4], tail)      # high frequencies die first (roughly)
    onset = d0 + int(0.005 * SR)
    tail[:onset] = 0
    h += 0.25 * tail
    return (h / np.max(np.abs(h))).astype(np.float32)


# --------------------------------------------------------------------- main
def _stamp_payload(seed: int, size: str) -> dict:
    src = hashlib.sha1(Path(__file__).read_bytes()).hexdigest()[:12]
    return {"version": VERSION, "seed": seed, "size": size, "code": src}


def is_complete(root: str | os.PathLike, seed: int, size: str) -> bool:
    stamp = Path(root) / ".demo_done"
    if not stamp.is_file():
        return False
    try:
        return json.loads(stamp.read_text()) == _stamp_payload(seed, size)
    except ValueError:
        return False


def make_demo_corpus(root: str | os.PathLike, *, seed: int = 777, size: str = "full",
                     nj: int = 2, log=print) -> Path:
    """Write the demo corpus under ``root`` (skipped when already complete for
    this seed, size and generator version). Returns ``root``."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, not {size!r}")
    root = Path(root)
    if is_complete(root, seed, size):
        log(f"demo corpus in {root} is complete (seed {seed}, size {size}); reusing it")
        return root
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed (apt-get install -y espeak-ng)")
    if root.exists() and any(root.iterdir()) and not (root / ".demo_done").exists() \
            and not (root / "README.txt").exists():
        raise RuntimeError(f"{root} exists and is not a demo corpus; choose another --demo-root")
    t_start = time.time()
    cfg = SIZES[size]
    tmp = root.parent / f".{root.name}.tmp{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    pre, emo = make_voices(rng, cfg["n_pre"], cfg["n_emo"])

    jobs: list[dict] = []
    pre_rows, emo_rows = [], []
    # Pre-training speakers: varied sentences, all emotions (mostly neutral).
    for v in pre:
        sents = rng.permutation(len(PRETRAIN_SENTENCES))
        for i in range(cfg["pre_utts"]):
            e = EMOTIONS[int(rng.choice(4, p=[0.4, 0.2, 0.2, 0.2]))]
            utt = f"{v.spk}-{i + 1:03d}"
            rel = f"pretrain/wav/{v.spk}/{utt}.wav"
            jobs.append(_utt_job(rng, v, e, PRETRAIN_SENTENCES[sents[i % len(sents)]], utt,
                                 str(tmp / rel)))
            pre_rows.append(dict(path=rel, speaker=v.spk, emotion=e, utt=utt, gender=v.gender))
    # Emotion speakers: CREMA-D sentences, each emotion, repetitions with jitter.
    n_tr, n_dev, n_te = cfg["split"]
    split_of = {}
    females = [v.spk for v in emo if v.gender == "f"]
    males = [v.spk for v in emo if v.gender == "m"]
    for group in (females, males):
        for k, s in enumerate(group):
            split_of[s] = ("train" if k < n_tr // 2 else "dev" if k < (n_tr + n_dev) // 2 else "test")
    codes = list(CREMA_SENTENCES)
    for v in emo:
        for e in EMOTIONS:
            n_sent = max(1, cfg["emo_utts"] // 2)
            chosen = [codes[i] for i in rng.choice(len(codes), n_sent, replace=False)]
            for i in range(cfg["emo_utts"]):
                code = chosen[i % n_sent]
                rep = i // n_sent + 1
                utt = f"{v.spk}-{e}-{code}-{rep}"
                rel = f"emotion/wav/{v.spk}/{utt}.wav"
                jobs.append(_utt_job(rng, v, e, CREMA_SENTENCES[code], utt, str(tmp / rel)))
                emo_rows.append(dict(path=rel, speaker=v.spk, emotion=e, utt=utt,
                                     gender=v.gender, split=split_of[v.spk]))
    # Babble sources: long-ish monologues by voices used by no speaker.
    speech_jobs = []
    for i in range(cfg["speech"]):
        voice = f"{BABBLE_VOICES[i % len(BABBLE_VOICES)]}+{(MALE_VARIANTS + FEMALE_VARIANTS)[int(rng.integers(20))]}"
        text = " ".join(PRETRAIN_SENTENCES[j] for j in rng.choice(len(PRETRAIN_SENTENCES), 3, replace=False))
        bv = Voice(spk="babble", gender="u", espeak=voice, pitch=int(rng.integers(20, 80)),
                   speed=int(rng.integers(150, 190)), warp=float(rng.uniform(0.9, 1.1)),
                   tilt=float(rng.uniform(-0.3, 0.3)), peak_hz=1500.0, peak_db=0.0)
        name = f"speech-synth-{i:04d}"
        speech_jobs.append(_utt_job(rng, bv, "neutral", text, name,
                                    str(tmp / f"musan/speech/synth/{name}.wav"), jitter=0.5))
    all_jobs = jobs + speech_jobs
    log(f"make_demo_corpus: synthesising {len(jobs)} utterances ({len(pre)} pre-training and "
        f"{len(emo)} emotion speakers) and {len(speech_jobs)} babble sources with {nj} processes")
    durs = {}
    if nj > 1:
        with get_context("fork").Pool(nj) as pool:
            for k, r in enumerate(pool.imap_unordered(render_utterance, all_jobs, chunksize=8), 1):
                durs[r["utt"]] = r["dur"]
                if k % 200 == 0:
                    log(f"make_demo_corpus: {k}/{len(all_jobs)} done")
    else:
        for r in map(render_utterance, all_jobs):
            durs[r["utt"]] = r["dur"]

    # Noise, music, RIRs (cheap, numpy only).
    for i in range(cfg["noise"]):
        x = make_noise(rng, i, float(rng.uniform(6, 10)))
        p = tmp / f"musan/noise/synth/noise-synth-{i:04d}.wav"
        p.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(p), np.clip(x, -1, 1).astype(np.float32), SR, subtype="PCM_16")
    for i in range(cfg["music"]):
        x = make_music(rng, float(rng.uniform(8, 12)))
        p = tmp / f"musan/music/synth/music-synth-{i:04d}.wav"
        p.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(p), np.clip(x, -1, 1).astype(np.float32), SR, subtype="PCM_16")
    n_rirs = 0
    for room_type, (lo, hi), dim in (("smallroom", (0.2, 0.45), 3.0), ("mediumroom", (0.4, 0.8), 8.0)):
        for r in range(cfg["rooms"]):
            rt60 = float(rng.uniform(lo, hi))
            room = f"Room{r + 1:03d}"
            for k in range(cfg["rirs_per_room"]):
                h = make_rir(rng, rt60 * float(rng.uniform(0.9, 1.1)), dim)
                p = tmp / f"RIRS_NOISES/simulated_rirs/{room_type}/{room}/{room}-{k + 1:05d}.wav"
                p.parent.mkdir(parents=True, exist_ok=True)
                sf.write(str(p), h, SR, subtype="PCM_16")  # FLOAT wavs carry a time stamp
                n_rirs += 1

    _write_csv(tmp / "pretrain.csv", ["path", "speaker", "emotion", "utt", "gender"], pre_rows)
    _write_csv(tmp / "emotion.csv", ["path", "speaker", "emotion", "utt", "gender", "split"], emo_rows)
    with open(tmp / "voices.json", "w") as f:
        json.dump({"pretrain": [asdict(v) for v in pre], "emotion": [asdict(v) for v in emo]}, f, indent=1)
    pre_d = [durs[r["utt"]] for r in pre_rows]
    emo_d = [durs[r["utt"]] for r in emo_rows]
    (tmp / "README.txt").write_text(
        "pyxv demo corpus -- SYNTHETIC SPEECH, NOT A REAL CORPUS.\n\n"
        "Made by local/make_demo_corpus.py with espeak-ng (formant synthesis) and numpy,\n"
        f"seed {seed}, size {size}. It exists so that ./run.sh runs end to end on a machine\n"
        "with no corpora (a smoke test of every stage, in minutes on 2 CPU cores).\n"
        "Its numbers say nothing about real emotion or speaker recognition.\n\n"
        f"pretrain/  {len(pre)} speakers x {cfg['pre_utts']} utterances (VoxCeleb's role), "
        f"{sum(pre_d) / 60:.1f} min\n"
        f"emotion/   {len(emo)} other speakers (half female) x 4 emotions (neutral happy sad angry,\n"
        f"           rendered through prosody) x {cfg['emo_utts']} utterances of the 12 CREMA-D\n"
        f"           sentences, {sum(emo_d) / 60:.1f} min; speaker-independent split "
        f"{n_tr}/{n_dev}/{n_te} speakers (train/dev/test)\n"
        "musan/     generated noise, music-like signals and babble sources, laid out like MUSAN\n"
        f"RIRS_NOISES/ {n_rirs} synthetic room impulse responses, laid out like RIRS_NOISES\n"
        "pretrain.csv, emotion.csv  manifests (path,speaker,emotion,utt,gender[,split]) for\n"
        "           local/prepare_manifest.py; voices.json  each speaker's synthesis settings\n")
    with open(tmp / ".demo_done", "w") as f:
        json.dump(_stamp_payload(seed, size), f)
    if root.exists():
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, root)
    log(f"make_demo_corpus: wrote {root}: pretrain {len(pre)} spk / {len(pre_rows)} utts "
        f"({min(pre_d):.1f}-{max(pre_d):.1f} s), emotion {len(emo)} spk / {len(emo_rows)} utts "
        f"({min(emo_d):.1f}-{max(emo_d):.1f} s), {cfg['noise']} noise, {cfg['music']} music, "
        f"{cfg['speech']} speech, {n_rirs} RIRs in {time.time() - t_start:.1f} s")
    return root


def _write_csv(path: Path, cols: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
