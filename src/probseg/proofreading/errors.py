"""The errors of proofreading sessions."""

from probseg.core.errors import ProbsegError


class SessionError(ProbsegError):
    """A session folder that is corrupt, incomplete, made for another image, or in use."""


class SessionLocked(SessionError):
    """The session is open for writing in another process.

    Attributes
    ----------
    holder : dict or None
        The lock file's record: ``pid``, ``host``, ``since`` (ISO 8601 UTC);
        None when the lock file cannot be read.
    """

    def __init__(self, message: str, holder: dict | None):
        super().__init__(message)
        self.holder = holder
