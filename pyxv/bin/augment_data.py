"""Augmented copies of a data dir (the jobs and the assembly of steps/augment_data_dir.sh).

  python -m pyxv.bin.augment_data augment --config conf/augment.yaml --noise-dir data/noise \\
      --audio-dir <out-data>/audio --info <info.jsonl> <in-data-or-split>
  python -m pyxv.bin.augment_data assemble --config conf/augment.yaml <in-data> <out-data> <info.jsonl>...

``augment`` writes one 16-bit FLAC per augmented copy under
<audio-dir>/<speaker>/<utt>-<type>.flac and a JSON line per copy (source
utterance, type, SNRs, RIR, noise files). ``assemble`` makes the per-type data
dirs <parent>/<in-name>_<type> and the combined <out-data>.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def cmd_augment(a) -> int:
    from pyxv.augment import Sources, augment_one, choose_types, load_config, utt_rng, write_flac
    from pyxv.config import ConfigError
    from pyxv.datadir import DataDir
    from pyxv.features.archive import exit_cleanly_on_signals
    from pyxv.io import OUTPUT_ERRNOS, OutputError, atomic_open

    try:
        cfg = load_config(a.config)
        data = DataDir(a.data)
        utts = data.utts
        data.wav_scp, data.segments
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"augment_data: {e}", file=sys.stderr)
        return 1
    sources = Sources(Path(a.noise_dir))
    try:
        for t in cfg["types"]:
            sources.ids(t)   # a missing source dir stops here, before any work
    except (FileNotFoundError, ValueError) as e:
        print(f"augment_data: {e}", file=sys.stderr)
        return 1
    audio_dir = Path(a.audio_dir).absolute()
    utt2spk = data.utt2spk
    print(f"augment_data: {a.data}: {len(utts)} utterances, {cfg['copies_per_utt']} of "
          f"{'/'.join(cfg['types'])} each, seed {cfg['seed']}", file=sys.stderr, flush=True)
    ok = failed = 0
    lines, written = [], []
    t0 = time.time()
    exit_cleanly_on_signals()
    try:
        for i, utt in enumerate(utts, 1):
            try:
                x, sr = data.read_audio(utt)
                copies = [(t, augment_one(x, sr, t, cfg, sources, utt_rng(cfg["seed"], f"{utt}-{t}")))
                          for t in choose_types(cfg, utt)]
            except Exception as e:  # one bad utterance (or noise file) never stops the job
                if isinstance(e, OSError) and e.errno in OUTPUT_ERRNOS:
                    raise OutputError(audio_dir, e) from e
                failed += 1
                print(f"augment_data: ERROR utterance {utt}: {e}", file=sys.stderr, flush=True)
                continue
            for t, (y, info) in copies:
                aug = f"{utt}-{t}"
                path = audio_dir / utt2spk[utt] / f"{aug}.flac"
                try:
                    write_flac(path, y, sr)
                except OutputError:
                    raise
                except OSError as e:  # the output side: fatal
                    raise OutputError(path, e) from e
                written.append(path)
                lines.append(json.dumps({"utt": aug, "orig": utt, "path": str(path),
                                         "dur": round(len(y) / sr, 4), **info}))
            ok += 1
            if i % 100 == 0:
                print(f"augment_data: {i}/{len(utts)} utterances, {time.time() - t0:.1f} s", file=sys.stderr,
                      flush=True)
        with atomic_open(a.info, "w", encoding="utf-8") as f:
            for line in lines:
                f.write(line + "\n")
    except BaseException as e:
        # The copies of this job are useless without its info file: remove them.
        for p in written:
            p.unlink(missing_ok=True)
        if isinstance(e, OutputError):
            print(f"augment_data: FATAL: {e}; stopped after {ok} utterances, nothing of this job kept",
                  file=sys.stderr, flush=True)
            return 1
        raise
    print(f"augment_data: done: {ok} utterances augmented ({len(lines)} copies), {failed} failed, "
          f"{time.time() - t0:.1f} s", file=sys.stderr, flush=True)
    return 0  # the step counts failures over all jobs


def cmd_assemble(a) -> int:
    from pyxv.augment import load_config
    from pyxv.datadir import DataDir, write_datadir
    from pyxv.io import atomic_open, write_lines

    cfg = load_config(a.config)
    src = DataDir(a.in_data)
    out = Path(a.out_data)
    records = []
    for info in a.info:
        with open(info, encoding="utf-8") as f:
            records += [json.loads(line) for line in f if line.strip()]
    if not records:
        print("augment_data: no augmented utterance to assemble", file=sys.stderr)
        return 1
    records.sort(key=lambda r: r["utt"].encode())
    utt2spk = src.utt2spk
    utt2emo = src.utt2emo if src.has("utt2emo") else None
    spk2gender = src.spk2gender if src.has("spk2gender") else None
    unknown = set()
    if src.has("unknown_spk_utts"):
        unknown = {line.split()[0] for line in open(src.path / "unknown_spk_utts", encoding="utf-8") if line.strip()}

    def write(d: Path, recs: list[dict]) -> None:
        u2s = {r["utt"]: utt2spk[r["orig"]] for r in recs}
        spks = set(u2s.values())
        write_datadir(
            d, utt2spk=u2s, wav_scp={r["utt"]: r["path"] for r in recs},
            utt2orig={r["utt"]: r["orig"] for r in recs},
            utt2dur={r["utt"]: f"{r['dur']:.4f}" for r in recs},
            utt2emo={r["utt"]: utt2emo[r["orig"]] for r in recs} if utt2emo is not None else None,
            spk2gender={s: g for s, g in spk2gender.items() if s in spks} if spk2gender is not None else None)
        unk = sorted((r["utt"] for r in recs if r["orig"] in unknown), key=str.encode)
        if unk:
            write_lines(d / "unknown_spk_utts", unk)
        with atomic_open(d / "augment_info.jsonl", "w", encoding="utf-8") as f:
            for r in recs:
                f.write(json.dumps(r) + "\n")

    parent, name = out.parent, Path(a.in_data.rstrip("/")).name
    for t in cfg["types"]:
        recs = [r for r in records if r["type"] == t]
        d = parent / f"{name}_{t}"
        if recs:
            write(d, recs)
            print(f"augment_data: {d}: {len(recs)} {t} copies", file=sys.stderr)
        else:
            print(f"augment_data: no utterance drew '{t}'; {d} not written", file=sys.stderr)
    write(out, records)
    counts = {t: sum(r["type"] == t for r in records) for t in cfg["types"]}
    print(f"augment_data: {out}: {len(records)} augmented utterances from {len(set(r['orig'] for r in records))} "
          f"of {len(utt2spk)} clean ones ({', '.join(f'{k} {v}' for k, v in counts.items())})", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("augment", help="augment the utterances of one (split) data dir")
    q.add_argument("--config", required=True)
    q.add_argument("--noise-dir", required=True, help="holds musan_noise musan_music musan_speech rirs")
    q.add_argument("--audio-dir", required=True, help="FLACs go under <audio-dir>/<speaker>/")
    q.add_argument("--info", required=True, help="JSON lines describing each copy")
    q.add_argument("data")
    q.set_defaults(fn=cmd_augment)
    q = sub.add_parser("assemble", help="per-type and combined data dirs from the jobs' info files")
    q.add_argument("--config", required=True)
    q.add_argument("in_data")
    q.add_argument("out_data")
    q.add_argument("info", nargs="+")
    q.set_defaults(fn=cmd_assemble)
    a = p.parse_args(argv)
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
