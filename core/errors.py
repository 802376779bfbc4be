"""One base class for the errors a user can fix (ARCHITECTURE.md, "Errors").

Every package raises a subclass of :class:`UserError` for bad input (a missing file, a wrong
size, an unsupported combination, a model that will not convert...), with a message that names
the file or option and the problem. The CLI prints those as one line and exits 2. Any other
exception is a bug: the CLI saves its traceback to a file, names it, and exits 70.

``UserError`` derives from ``ValueError`` so code that already catches ``ValueError`` keeps
working; the CLI itself catches ``UserError`` only, so a stray ``ValueError`` from a bug is not
mistaken for a user's mistake.
"""
from __future__ import annotations


class UserError(ValueError):
    """Bad input or an unsupported request; the message says what, where and what to do."""
