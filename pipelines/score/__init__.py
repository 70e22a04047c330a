"""`sparkcnn score`: batch-score a dataset split with a trained model; predictions Parquet + metrics."""
