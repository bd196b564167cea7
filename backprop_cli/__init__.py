"""backprop: see backpropagation at work and train small two-layer networks.

``backprop_cli.load(path)`` gives a trained model in Python (backprop_cli/api.py); it is imported on first use,
so ``import backprop_cli`` imports no torch.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name in ("load", "Model"):
        from backprop_cli import api

        return getattr(api, name)
    raise AttributeError(f"module 'backprop_cli' has no attribute {name!r}")


__all__ = ["load", "Model", "__version__"]
