"""Tables: reading CSV files (an exact reader and a fast pyarrow one that agree), labels, the split and
the scaling (statistics from training rows only), batches. Nothing here prints."""
