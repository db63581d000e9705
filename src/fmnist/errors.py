"""The one exception family. The CLI prints ``str(error)`` as one line and exits 2.

Every message says what is wrong, where, and what to do about it.
"""


class FmnistError(Exception):
    """Base class of every error fmnist raises on purpose."""


class DatasetError(FmnistError):
    """The dataset files are missing, unreadable, malformed or fail verification."""


class ModelError(FmnistError):
    """A model cannot be built, trained or loaded as asked (wrong shapes, not compiled, …)."""


class RunError(FmnistError):
    """A run directory or model file is missing or incomplete."""


class DistributionError(FmnistError):
    """A training over several devices or processes cannot be set up as asked."""


class ImageError(FmnistError):
    """An image file cannot be read or turned into a 28×28 input."""


class ImageTooLargeError(ImageError):
    """An image has more pixels than the limit allows (a guard against decompression bombs)."""


class CheckpointError(RunError):
    """A training checkpoint cannot be read (truncated, corrupted, of another version)."""


class Interrupted(FmnistError):
    """Training stopped on request (Ctrl-C, SIGTERM) after writing a checkpoint: not a failure.

    The message says how to continue; the CLI exits 130 (SIGINT) or 143 (SIGTERM).
    """


class DeviceError(FmnistError):
    """The device kind asked for (``--platform gpu``) is not there, or a precision is unknown."""
