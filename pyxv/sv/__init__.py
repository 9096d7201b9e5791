"""Speaker verification by emotion (paper section 4.2), one job per module.

* ``trials``: who is tried against whom (the trial set of a data dir, Kaldi trials files);
* ``scoring``: all same-gender pairs scored block by block, or a trials file's trials;
* ``cells``: the per-(enrolment emotion, test emotion) score table and its EER/minDCF figures;
* ``folds``: the per-fold protocol (a back-end per fold of the corpus's speaker-disjoint folds);
* ``posteriors``: trial-side emotions from the recipe's emotion recogniser;
* ``results``: a table written out (csv, md, json; det.png, drawn by ``pyxv.report.plots.det_curves``);
* ``config``: conf/sv.yaml's settings, checked;
* ``run``: stage 6's scoring runs (``pyxv.bin.score_sv`` is their command line).

The fitted back-ends (cosine, PLDA, emotion NAP, AS-norm, calibration) are ``pyxv.backend``.
"""
