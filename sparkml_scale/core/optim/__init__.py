"""Optimizers of linear models over distributed data: L-BFGS-B (:mod:`.lbfgs`, map-reduce or
allreduce) and mini-batch AdaGrad with parameter mixing (:mod:`.sgd`)."""
