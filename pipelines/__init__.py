"""sparkcnn: distributed Spark deep-learning pipeline for image CNNs."""
import logging

__version__ = "0.2.0"

# Library code logs on "sparkcnn.*" loggers (pipelines/core/log_output.py); without this a warning
# would reach stderr through logging's last-resort handler in a program that configured nothing.
logging.getLogger("sparkcnn").addHandler(logging.NullHandler())
