"""The core every stage builds on: config engine, record contract, run store, errors, Spark session,
TensorFlow runtime, figures and metrics.  It imports no stage.
"""
