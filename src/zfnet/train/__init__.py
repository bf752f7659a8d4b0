"""Training: the loop, evaluation, filter renormalisation, checkpoints and resume."""
