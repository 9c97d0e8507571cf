"""Exception types: one per kind of mistake a user can fix.

Every error raised on purpose by fastmnist derives from :class:`FastMnistError`, so the CLI
can print it as one line and exit non-zero without a traceback.
"""


class FastMnistError(Exception):
    """Base class of every error fastmnist raises on purpose."""


class InvalidArgument(FastMnistError, ValueError):
    """A value the caller passed is out of range, of the wrong shape, or unknown (an option, a model
    name, a kernel argument); the message names it."""


class WrongType(FastMnistError, TypeError):
    """An argument of the wrong type or dtype; the message names it and what was expected."""


class DataError(FastMnistError, ValueError):
    """A data file (IDX, CSV, npz) is missing, malformed or holds values out of range."""


class ModelFileError(FastMnistError, ValueError):
    """A saved model or checkpoint file is malformed, tampered with or incompatible."""


class ImageError(FastMnistError, ValueError):
    """An image could not be read or holds no digit (empty, no ink); the message names the image."""


class NoInk(ImageError):
    """No digit found: the picture is paper (and light) only. Raised where the picture's name is
    not known (``photos.inkmask``): a caller that has the name says which picture it was."""


class BackendUnavailable(FastMnistError, RuntimeError):
    """A named backend cannot run on this machine (the message says why and how to fix it)."""


class OutOfMemory(FastMnistError, MemoryError):
    """The device (or host) ran out of memory; the message names the operation, its input shapes
    and what to make smaller."""


class TrainingDiverged(FastMnistError, FloatingPointError):
    """The loss became NaN or infinite; the message names the epoch and the step."""
