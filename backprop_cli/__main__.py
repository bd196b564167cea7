"""``python -m backprop_cli`` and the ``backprop`` command: the signal handlers first, then the CLI
(a Ctrl-C while typer, pydantic or torch load is one line, not a traceback).

The process's garbage collector is set for a short program that imports a very large one. torch and
torch._dynamo create millions of objects while they import; with Python's default threshold (a
collection every 700 allocations) the collector walks them again and again, and at exit the
interpreter's last collection walks them all once more. Measured here (benchmarks/bench_command.py,
README "The whole command"): about 0.4 s of collections during the imports and 0.5 s at exit, of a 3 s
one-step ``train``. So: a collection every :data:`GC_THRESHOLD` allocations (cycles are still
collected, later), and at exit the objects are frozen (``gc.freeze``) so that the last collection
skips them; the operating system frees the memory. Nothing else of the exit changes: every file is
closed by the command itself before it returns, atexit handlers and finalizers still run.
"""

import gc

from backprop_cli.io.signals import install

GC_THRESHOLD = 10_000  # allocations between two young-generation collections (Python's default: 700)


def main() -> None:
    install()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
    try:
        from backprop_cli.cli.app import main as cli_main

        cli_main()
    finally:
        gc.freeze()


if __name__ == "__main__":
    main()
