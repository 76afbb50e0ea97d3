"""One error taxonomy, decided at the edge.

The module that talks to a system (LibreOffice, a server, a file) turns its failures into one of
these classes. Callers decide what to do by class, never by message text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:                     # core.retry imports this module
    from core.retry import RetryPolicy

__all__ = ["UmstiegError", "ConfigError", "TransientError", "ItemError", "UserStopped", "FatalError", "RunInProgress"]


def _rebuilt(cls: type, args: tuple) -> "UmstiegError":
    """An error of class `cls` with `args`, made without calling its __init__ (see __reduce__)."""
    return cls.__new__(cls, *args)


class UmstiegError(Exception):
    """Base of every error umstieg raises on purpose."""

    def __reduce__(self):
        # Errors leave a task by pickle (Dask pickles what escapes a task). Python's default
        # rebuilds an exception as cls(*args), which fails for every subclass whose __init__ takes
        # more than the message (UserStopped's owner, Refused's reason, ...): rebuild it from its
        # args without __init__, then restore its attributes.
        return _rebuilt, (type(self), self.args), self.__dict__ or None


class ConfigError(UmstiegError):
    """The configuration or the environment is wrong: stop before any data moves.

    The message says what to change, in words a person can act on.
    """


class TransientError(UmstiegError):
    """A failure that may go away by itself: retry with backoff.

    `retry_after` (seconds) is set when the other side said how long to wait. `attempts` is how
    often a retry policy already tried (0: not yet; set, outer layers pass the error on, see
    core/retry.py); `policy`, when set, is the retry policy of the system that raised it.
    """

    attempts: int = 0
    policy: RetryPolicy | None = None

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ItemError(UmstiegError):
    """One item cannot be processed: record it on the item, skip it, go on with the batch."""


class UserStopped(UmstiegError):
    """One user cannot go on (their target account is full, or refuses the login): that user's
    batches stop with this reason, every item in the last state it really reached; the other
    users go on. `owner` is the target login concerned."""

    def __init__(self, message: str, owner: str) -> None:
        super().__init__(message)
        self.owner = owner


class FatalError(UmstiegError):
    """The run cannot go on (a dead dependency, a full disk): stop the batch cleanly."""


class RunInProgress(FatalError):
    """Another run of the department is alive (a scheduled run and a manual one): this one refuses
    to start, since both would take the same items."""
