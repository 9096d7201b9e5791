"""Speech emotion recognition on top of x-vectors (paper section 2.2, Table 2):
protocol and training data (:mod:`.data`), logistic regression on frozen
x-vectors (:mod:`.lr`), random-init and fine-tuned networks (:mod:`.nnet`), and
the six systems with their fold loop (:mod:`.systems`)."""
