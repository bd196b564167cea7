"""Files on disk: untrusted reads, output paths, atomic writes, signals, checkpoints, metrics files.
Nothing here prints."""
