"""The model and its mathematics: components with their hand-written derivatives, the network, the
hand-written chain rule, the training loop (engine), diagnostics and the warnings drawn from them, the
plain records a run produces. Nothing here prints or reads files."""
