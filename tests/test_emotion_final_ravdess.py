"""Final models and cross-corpus evaluation of the x-vector systems on real RAVDESS
clips with tiny networks: the frozen x-vector + LR system (x-vectors of the target
computed by the source's model as stage 4 computes them) and a random-init network
(epochs from its folds' choices)."""
import json

import kaldiio
import numpy as np
import pytest
import torch

from pyxv.datadir import write_datadir
from pyxv.emotion import crosscorpus, systems
from pyxv.emotion.data import discover_protocol, labeled_set
from pyxv.io import read_table

from ravdess_emotion import MFCC_8K, TINY, corpus, emotion_config, pretrain_xvector  # noqa: F401  (corpus: the fixture)


def target_dir(emo, root, name, utts):
    """A prepared target corpus: the given utterances' data-dir files and features."""
    d = root / "data" / name / "all"
    src = emo / "all"
    keep = set(utts)
    write_datadir(d, utt2spk={u: s for u, s in read_table(src / "utt2spk").items() if u in keep},
                  wav_scp={u: w for u, w in read_table(src / "wav.scp").items() if u in keep},
                  utt2emo={u: e for u, e in read_table(src / "utt2emo").items() if u in keep})
    for f in ("feats.scp", "vad.scp"):
        (d / f).write_text("".join(f"{u} {v}\n" for u, v in read_table(src / f).items() if u in keep))
    return d


def test_frozen_lr_final_scores_another_corpus_with_its_own_xvectors(corpus):
    root, emo = corpus
    torch.set_num_threads(1)
    model = pretrain_xvector(root, emo, name="xvector_final_test")
    from pyxv.bin import extract_xvectors

    xdir = model.parent / "xvectors_ravd" / "all"   # stage 4's x-vectors, by stage 4's program
    xdir.mkdir(parents=True, exist_ok=True)
    assert extract_xvectors.main(["extract", str(model), str(emo / "all"), str(xdir / "xvector.1.ark")]) == 0
    assert extract_xvectors.main(["merge", "--nj", "1", str(emo / "all"), str(xdir)]) == 0
    utts = sorted(labeled_set(emo / "all").utts)
    cfg = emotion_config(root)
    cfg["xvector_models"]["clean"] = str(model.parent)
    out = root / "exp" / "emotion" / "ravd"
    rec = systems.run_final("frozen_lr_clean", "clean", emo, out, cfg)
    assert rec["n_train"] == 192 and rec["n_speakers"] == 24
    # target: 8 actors' clips as a corpus of their own
    tgt_utts = [u for u in utts if int(u[1:3]) <= 8]
    tgt = target_dir(emo, root, "tgt8", tgt_utts)
    m = crosscorpus.evaluate(out / "frozen_lr_clean_clean", tgt, root / "cross", standardise=True)
    assert m["n_test"] == len(tgt_utts) == 64 and set(m["standardised"]) >= {"weighted_f1", "unweighted_accuracy"}
    # its x-vectors are the source model's as stage 4 makes them (up to float sums in other
    # batches: stage 4 had every utterance), and the posteriors are the final LR's on them
    keys, X = crosscorpus.xvectors(model.parent, tgt, tgt_utts)
    table = kaldiio.load_scp(str(xdir / "xvector.scp"))
    Y = np.stack([table[u] for u in keys])
    cos = (X * Y).sum(1) / np.linalg.norm(X, axis=1) / np.linalg.norm(Y, axis=1)
    assert keys == tgt_utts and cos.min() > 0.9999
    lr, meta = crosscorpus.read_lr_model(out / "frozen_lr_clean_clean" / "final")
    assert meta["xvector_model"] == str(model.parent)
    got = {l.split()[0]: np.array(l.split()[1:], float) for l in (root / "cross" / "posteriors").read_text().splitlines()}
    assert np.allclose(np.stack([got[u] for u in keys]), lr.predict_proba(X), atol=2e-6)
    # features made with another MFCC config than the model's are refused in one line
    (model.parent / "mfcc.conf").write_text(MFCC_8K)
    (tgt / "conf").mkdir()
    (tgt / "conf" / "mfcc.conf").write_text(MFCC_8K.replace("--num-ceps=23", "--num-ceps=20"))
    with pytest.raises(crosscorpus.CrossCorpusError, match=r"tgt8/all: its MFCC were made with .*--num-ceps=20.* "
                                                           r"but .*final.pt takes MFCC made with .*--num-ceps=23"):
        crosscorpus.evaluate(out / "frozen_lr_clean_clean", tgt, root / "cross2")
    (tgt / "vad.scp").unlink()
    (tgt / "conf" / "mfcc.conf").unlink()
    with pytest.raises(crosscorpus.CrossCorpusError, match=r"tgt8/all/vad.scp does not exist: MFCC \+ energy VAD"):
        crosscorpus.evaluate(out / "frozen_lr_clean_clean", tgt, root / "cross2")


def test_network_final_trains_the_folds_median_epochs_and_scores_another_corpus(corpus):
    root, emo = corpus
    torch.set_num_threads(1)
    arch = root / "arch_final.yaml"
    arch.write_text(json.dumps(TINY))
    cfg = emotion_config(root, architecture=str(arch), epochs=4, steps_per_epoch=2, batch_size=8, chunk_min=50,
               chunk_max=80, dev_fraction=0.15, patience=2)
    out = root / "exp" / "emotion" / "ravd_net"
    sdir = out / "randinit_mfcc_clean"
    # the folds' kept epochs (their own training is the fold loop's, tested elsewhere)
    for sp, best in zip(discover_protocol(emo), (1, 3, 2, 2, 4, 3)):
        (sdir / sp.name / "log").mkdir(parents=True)
        (sdir / sp.name / "log" / "history.json").write_text(json.dumps(
            [{"epoch": e, "dev_metric": 0.9 if e == best else 0.2} for e in range(1, 5)]))
    rec = systems.run_final("randinit_mfcc", "clean", emo, out, cfg)
    assert rec["epochs"] == 2 and "the median of the epochs the folds kept" in rec["how"]
    hist = json.loads((sdir / "final" / "log" / "history.json").read_text())
    assert len(hist) == 2 and all(h.get("dev_metric") is None for h in hist)   # no dev, no early stop
    assert "2 epoch(s), the median" in (sdir / "final" / "README.txt").read_text()
    assert (sdir / "final" / "final.pt").is_file() and not (sdir / "final" / "checkpoints").exists()
    utts = sorted(labeled_set(emo / "all").utts)
    tgt = target_dir(emo, root, "tgt_net", [u for u in utts if int(u[1:3]) > 20])
    m = crosscorpus.evaluate(sdir, tgt, root / "cross_net", standardise=True)
    assert m["n_test"] == 32 and "standardised" not in m   # a network has no back-end input to standardise
    rows = [l.split() for l in (root / "cross_net" / "posteriors").read_text().splitlines()]
    assert len(rows) == 32 and all(abs(sum(map(float, r[1:])) - 1) < 1e-4 for r in rows)
    # pyxv emotion's default for the system dir is this final model, and it agrees on a clip
    from pyxv.inference import load_emotion_model

    em = load_emotion_model(sdir)
    assert em.source.endswith("final")
