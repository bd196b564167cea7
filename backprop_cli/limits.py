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
# Classes of a classification (a label column's distinct labels, a checkpoint's data.classes, a cross_entropy
# model's outputs): every evaluation counts a classes × classes confusion matrix, so 10,000 classes in a 0.3 MB
# CSV took gigabytes. init's bound too: it calls a text column with more distinct values not a class column.
MAX_CLASSES = 1000
# evaluate's and train's table show the confusion matrix up to this many classes; --format json has it whole.
MAX_SHOWN_CONFUSION = 30

THREADS_PER_CORE = 4  # the most --threads may ask for: more only slows torch down, and OpenMP aborts
# Below this much work per step (6 · batch · parameters) one thread is as fast as all cores or faster:
# the threads of a small step spend more time meeting than working, and on a busy machine a second
# thread that waits for a core can make each step 10-50× slower. Measured by benchmarks/bench_threads.py
# on the README's machine at load 1 (table under Performance): both cores paid from 1.3e7 and 5.1e7
# FLOP per step in two runs (1.4× at 1e8, 1.6-1.9× above); the larger of the two is kept.
THREADS_THRESHOLD_FLOPS = 5e7
# The default of --threads as its help states it (cli/options.py), the rule set_threads follows
# (runs/distributed.py): one text, next to the numbers it names.
THREADS_DEFAULT = (f"OMP_NUM_THREADS if set; else under torchrun the cores shared out among its processes; "
                   f"else by the work per step: 1 thread below {THREADS_THRESHOLD_FLOPS / 1e6:g} MFLOP per step, "
                   f"all cores from there")
