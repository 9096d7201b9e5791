"""Corpus preparers: each turns a corpus into Kaldi data dirs (``all/`` plus
its protocol subsets). ``local/prepare_<corpus>.py`` are thin entry points.

Modules: common (records, audio checks, writing, folds), demo (the synthetic
demo corpus), manifest, ravdess, crema_d, iemocap, msp_podcast, voxceleb,
noise (MUSAN, RIRS_NOISES), check (data-dir consistency checks).
"""
