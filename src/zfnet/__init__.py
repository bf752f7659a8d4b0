"""zfnet: a reproduction of Zeiler & Fergus, Visualizing and Understanding Convolutional Networks."""

__version__ = "0.1.0"
