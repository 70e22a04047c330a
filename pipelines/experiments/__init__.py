"""`sparkcnn experiment`: parameter sweeps, one single-process Keras trial per Spark task."""
