"""A speaker enrolled from several utterances, saved as plain JSON.

The enrolment x-vector is the mean of the length-normalised embeddings of the
enrolment utterances (the i-vector/x-vector recipes' ``ivector-normalize-length |
ivector-mean``): each utterance counts once whatever its embedding's norm
(which follows duration and channel more than the speaker). The back-ends were
trained on raw embeddings (their centring subtracts a raw-scale mean), so the
vector they score is that mean direction at the enrolment embeddings' mean
norm: with equal norms it is exactly the raw mean.

The file records the encoder it came from with a SHA-256 of the weights that
make embeddings (``net.embedding_layers()``): embeddings of another encoder
live in another space, and a speaker file is refused by any other encoder.

    spk = SpeakerModel.from_embeddings(E, encoder_info(xv), files)
    spk.save("alice.json"); SpeakerModel.load("alice.json").check(encoder_info(xv))
    spk.vector()                   # (E,) what the back-end scores against tests
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

FORMAT = "pyxv-speaker"
VERSION = 1


class SpeakerFileError(ValueError):
    """A speaker file that cannot be read or belongs to another encoder; the message names it."""


def weights_checksum(net) -> str:
    """SHA-256 of the weights (and buffers) of the layers that make embeddings,
    by name, dtype, shape and bytes; on any device."""
    import torch

    h = hashlib.sha256()
    for i, module in enumerate(net.embedding_layers()):
        for name, t in module.state_dict().items():
            t = t.detach().cpu().contiguous().reshape(-1)
            h.update(f"{i}.{name}:{t.dtype}:{tuple(t.shape)};".encode())
            h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@dataclass
class SpeakerModel:
    mean: np.ndarray                   # (E,) mean of the length-normalised enrolment embeddings
    norm: float                        # mean norm of the raw enrolment embeddings
    count: int
    encoder: dict                      # {"model", "type", "dim", "sha256"}
    files: list[str] = field(default_factory=list)

    @classmethod
    def from_embeddings(cls, E: np.ndarray, encoder: dict, files: Sequence[str] = ()) -> "SpeakerModel":
        E = np.asarray(E, dtype=np.float64)
        if E.ndim != 2 or len(E) == 0:
            raise ValueError(f"enrolment needs at least one embedding, got an array of shape {E.shape}")
        n = np.linalg.norm(E, axis=1)
        if (n <= 0).any():
            raise ValueError("an enrolment embedding is all zeros")
        return cls((E / n[:, None]).mean(0), float(n.mean()), len(E), dict(encoder), list(files))

    def add(self, E: np.ndarray, files: Sequence[str] = ()) -> "SpeakerModel":
        """This speaker with more enrolment embeddings (the running means go on)."""
        more = SpeakerModel.from_embeddings(E, self.encoder, files)
        n = self.count + more.count
        return SpeakerModel((self.mean * self.count + more.mean * more.count) / n,
                            (self.norm * self.count + more.norm * more.count) / n, n, self.encoder,
                            self.files + more.files)

    def vector(self) -> np.ndarray:
        """The enrolment x-vector on the raw embeddings' scale (see the module doc)."""
        return self.mean * self.norm

    def check(self, encoder: dict, where: str = "speaker file") -> None:
        """A SpeakerFileError in one line unless ``encoder`` is the one it came from."""
        mine, theirs = self.encoder.get("sha256"), encoder.get("sha256")
        if mine != theirs or int(self.encoder.get("dim", -1)) != int(encoder.get("dim", -2)):
            raise SpeakerFileError(
                f"{where}: enrolled with encoder {self.encoder.get('model')} (weights sha256 {str(mine)[:12]}, "
                f"dim {self.encoder.get('dim')}) but this encoder is {encoder.get('model')} (sha256 "
                f"{str(theirs)[:12]}, dim {encoder.get('dim')}): enrol the speaker again with this encoder")

    # ------------------------------------------------------------ file
    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "count": self.count, "norm": self.norm,
                "mean": [float(x) for x in self.mean], "encoder": self.encoder, "files": self.files,
                "rule": "mean of the length-normalised enrolment embeddings; scored as mean * norm"}

    def save(self, path: str | os.PathLike) -> None:
        from .io import atomic_open

        with atomic_open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=1)
            f.write("\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SpeakerModel":
        from .io import read_format_json

        d = read_format_json(path, FORMAT, VERSION, "speaker", SpeakerFileError)
        try:
            mean = np.asarray(d["mean"], dtype=np.float64)
            spk = cls(mean, float(d["norm"]), int(d["count"]), dict(d["encoder"]), [str(f) for f in d.get("files", [])])
        except (KeyError, TypeError, ValueError) as e:
            raise SpeakerFileError(f"{path}: speaker file without a usable {e}") from None
        dim = int(spk.encoder.get("dim", -1))
        if mean.ndim != 1 or spk.count < 1 or not np.isfinite(mean).all() or mean.size != dim:
            raise SpeakerFileError(f"{path}: speaker file with a mean of shape {mean.shape}, count {spk.count}, "
                                   f"encoder dim {spk.encoder.get('dim')}")
        return spk
