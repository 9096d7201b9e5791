"""Training of the x-vector (and of any utterance classifier built on it):
feature preparation and random-chunk sampling (:mod:`.data`), the generic
trainer (:mod:`.trainer`), checkpoints and distributed set-up."""
