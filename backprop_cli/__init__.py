"""backprop: see backpropagation at work and train small two-layer networks."""

__version__ = "0.1.0"
