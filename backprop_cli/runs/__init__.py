"""One orchestration per command (train, compare-optimizers, find-lr, inspect-grads/check-grads,
evaluate, predict, explain) and the training set-up around the engine (sinks, resume, torchrun).
Nothing here prints: the CLI hands results to render."""
