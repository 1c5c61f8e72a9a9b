"""Kafka error codes, re-exported from kio so the rest of Strata has one name for them."""

from kio.schema.errors import ErrorCode

__all__ = ["ErrorCode", "ProtocolError", "FrameTooLarge", "InvalidFrame"]


class ProtocolError(Exception):
    """Input that cannot be answered; the connection it came from is closed."""


class InvalidFrame(ProtocolError):
    """A size prefix that is negative or otherwise impossible."""


class FrameTooLarge(ProtocolError):
    """A size prefix above `socket.request.max.bytes`."""
