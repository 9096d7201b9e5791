"""Speech emotion recognition on top of x-vectors (paper section 2.2, Table 2):
the systems' table (:mod:`.spec`), protocol and training data (:mod:`.data`),
logistic regression on frozen x-vectors (:mod:`.lr`), random-init and fine-tuned
networks (:mod:`.nnet`), the reference systems (:mod:`.reference`), the fold loop
and final models (:mod:`.systems`) and cross-corpus evaluation (:mod:`.crosscorpus`)."""
