"""Bounds on what a user may ask for, in one place. No torch, no pydantic: the CLI imports this.

Every count a user gives (steps, sizes, batches, samples, intervals) is at most :data:`MAX_COUNT`,
whether it comes from the config, ``--set`` or a command-line option: torch's int64 arithmetic holds
it with room to spare, so a huge number is one line instead of a failure deep inside torch.
"""

MAX_COUNT = 2**50
MAX_SEED = 2**63 - 1
# An integer literal in YAML longer than this is refused before it is converted (a 5,000-digit
# number is past what Python converts to text, and no config value needs more than 20 digits).
MAX_INT_CHARS = 100
MAX_SEEDS = 1000  # compare-optimizers --seeds: each seed is a whole run per optimizer
MAX_EXPLAIN_UPDATES = 10_000  # explain --updates: the history is kept and shown row by row
