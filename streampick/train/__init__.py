"""Training a picker from positive and unlabeled picks (method.md §3; issue 4).

``objectives`` (PN, GE-KL, GE-binomial, nnPU and the class prior π), ``data`` (micrographs preprocessed once,
labels, label maps), ``sampler`` (augmented receptive-field crops) and ``loop`` (Adam, held-out particle AP
per epoch, best checkpoint, splits and k-fold).  ``streampick train`` is the command-line front.
"""
