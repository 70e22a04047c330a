"""`sparkcnn ingest`: raw files (IDX, CIFAR, .npz, image folders) -> Parquet datasets in the record contract."""
