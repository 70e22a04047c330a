"""`sparkcnn report`: runs/<run>/report/index.html with samples, curves and the confusion matrix."""
