"""`sparkcnn export`: a dataset back to lossless PNG files, one folder per class."""
