"""User-facing errors: each says, in one line, which file or setting is wrong and how.

Entry scripts catch ``UserError`` and print its message alone, never a library traceback.
"""

from __future__ import annotations

import os


class UserError(ValueError):
    """Bad input from the user: a config, a path, a data set or a checkpoint."""


class PathError(UserError):
    """A file-system failure (read-only, no space, permission denied, a file where a folder should
    be), as one line naming the path and the cause: ``cannot write out/x/checkpoint.pth: No space
    left on device``."""

    @classmethod
    def from_os_error(cls, err: OSError, path: str | os.PathLike | None = None, verb: str = "write") -> PathError:
        where = path if path is not None else (err.filename or "?")
        cause = err.strerror or str(err) or type(err).__name__
        return cls(f"cannot {verb} {where}: {cause}")
