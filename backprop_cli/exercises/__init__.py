"""Write a backward yourself: the exercises (no torch here). See catalog.py."""

from backprop_cli.exercises.catalog import EXERCISES, Exercise, sizes_text, template

__all__ = ["EXERCISES", "Exercise", "sizes_text", "template"]
