"""fastmnist: MNIST networks trained from scratch on pluggable compiled-kernel backends.

>>> import fastmnist
>>> be = fastmnist.get_backend("numpy")
>>> model = fastmnist.zoo.create("simple-cnn", backend=be)
"""
from . import config, zoo
from .backends import available_backends, get_backend, set_backend, use_backend
from .data import load_mnist, validation_split
from .errors import BackendUnavailable, DataError, FastMnistError, ModelFileError, OutOfMemory, TrainingDiverged
from .model import Sequential, load

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailable", "DataError", "FastMnistError", "ModelFileError", "OutOfMemory", "Sequential", "TrainingDiverged",
    "available_backends", "config", "get_backend", "load", "load_mnist", "set_backend", "use_backend",
    "validation_split", "zoo", "__version__",
]
