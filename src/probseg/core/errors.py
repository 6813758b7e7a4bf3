"""Errors with messages meant for the person at the microscope.

Every message is one line that says what is wrong and, where it helps, what
to do; the CLI prints it without a traceback and the widgets show it as a
notification.
"""


class ProbsegError(Exception):
    """Base class of all errors the engine raises on purpose."""


class InputError(ProbsegError, ValueError):
    """An image, label array or argument that cannot be used as given."""


class CheckpointError(ProbsegError):
    """A model folder that is missing, truncated, corrupt or of another method."""


class Cancelled(ProbsegError):
    """The user asked a running job to stop; partial results were kept."""
