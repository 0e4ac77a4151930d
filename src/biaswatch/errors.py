"""The few exception types biaswatch raises on purpose.

Each one marks a boundary: ``ConfigError`` stops startup (exit 78, EX_CONFIG),
``FrameRejected`` ends one frame's processing with a recorded reason, and
``CombineFailed`` ends one set's combine with a recorded reason.
"""

from __future__ import annotations


class BiaswatchError(Exception):
    """Base class of biaswatch's own errors."""


class ConfigError(BiaswatchError):
    """The configuration cannot be used; ``problems`` lists every reason."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class MissingExtra(ConfigError):
    """The config asks for an optional part that is not installed (exit 78), told in one line."""

    def __init__(self, message: str) -> None:
        super().__init__([message])


class FrameRejected(BiaswatchError):
    """A frame cannot be used; ``reason`` is recorded in the catalog."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class CombineFailed(BiaswatchError):
    """A set could not be combined; ``reason`` is recorded in the catalog."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class SchedulerUnreachable(BiaswatchError):
    """No Dask scheduler answered at the configured address (exit 69, EX_UNAVAILABLE)."""
