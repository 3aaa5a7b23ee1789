"""autoencoded: the core the rest stands on (the command line, user errors, file I/O, media, plugins); training,
export, live and presets install beneath it as autoencoded.training, .export, .live and .presets."""

__version__ = "0.1.0"
