"""Kaldi data directories: the contract between the recipe's steps.

A data dir holds ``wav.scp``, ``utt2spk``, ``spk2utt`` and optionally
``segments``, ``spk2gender``, ``utt2emo``, ``utt2dur``, ``utt2num_frames``,
``feats.scp``, ``vad.scp`` (and other ``*.scp`` archives such as
``gemaps_lld.scp``). Files are sorted in C-locale order with unique keys.

Read access (:class:`DataDir`, :func:`write_datadir`, in :mod:`.access`) is
imported from here. The data-dir tools of ``utils/`` each have a module:
:mod:`.validate` (:func:`~.validate.validate_datadir`), :mod:`.fix`,
:mod:`.split`, :mod:`.subset` (:func:`~.subset.select_utts` with
:func:`~.subset.filter_datadir`), :mod:`.combine`, :mod:`.copy` and
:mod:`.propagate`; :mod:`.tables` holds what they share (key kinds of the
files, C-locale order, reading and writing tables) and :mod:`.frames` the frame
counts of archives. Outputs are written atomically and only when their content
changes, so re-running a tool keeps time stamps (and the up-to-date checks of
later steps) intact.
"""
from .access import DataDir, Segment, utt2spk_to_spk2utt, write_datadir

__all__ = ["DataDir", "Segment", "utt2spk_to_spk2utt", "write_datadir"]
