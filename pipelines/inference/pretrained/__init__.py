"""Pretrained ImageNet networks by name (the registry), built in Keras with weights read from pip packages."""
