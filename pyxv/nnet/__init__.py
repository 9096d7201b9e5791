"""Neural networks of the x-vector: ResNet trunk, multi-head attention pooling,
margin softmax losses, and the whole model (:mod:`pyxv.nnet.xvector`)."""
