"""Tables: readers (CSV/TSV/gzip text, exact and pyarrow, and Parquet) giving the same columns, column types,
encoding (one-hot, embedding, missing-cell policies) fitted on the training rows, labels, the split and the
scaling (statistics from training rows only), batches. Nothing here prints."""
