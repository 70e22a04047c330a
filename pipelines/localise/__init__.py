"""`sparkcnn localise`: a classifier as a fully-convolutional detector, run over composite canvases."""
