"""How an error is shown to a user: one line."""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, or its type's name when the message is empty
    (``KeyError()``, a bare ``RuntimeError``): what a one-line error report quotes."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
