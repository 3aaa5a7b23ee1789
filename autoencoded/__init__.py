"""autoencoded: shared plumbing (command line, user errors, the model weights file format)."""

__version__ = "0.1.0"
