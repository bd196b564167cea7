"""Everything a person reads: the console policy, fitted tables, one renderer per command, plots and
the JSON documents. Nothing here computes what it shows; no torch at import."""
