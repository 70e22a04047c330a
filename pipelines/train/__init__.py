"""`sparkcnn train`: Horovod workers as Spark tasks, reading Parquet through Petastorm; resume from checkpoints."""
