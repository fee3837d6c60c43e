"""User-facing errors: each says, in one line, which file or setting is wrong and how.

Entry scripts catch ``UserError`` and print its message alone, never a library traceback. Five
kinds, by what the user must look at:

* :class:`ConfigError`: a setting, a flag, a config file, a task, stage or plug-in name;
* :class:`DataError`: a data set, a class list, a record file;
* :class:`CheckpointError`: a checkpoint or weights file (missing, unreadable, unsafe, not fitting);
* :class:`PathError`: the file system (read-only, full, permission denied);
* :class:`RunFolderError`: a run folder that belongs to another live process or to another run.
"""

from __future__ import annotations

import os


class UserError(ValueError):
    """Bad input from the user: a config, a path, a data set or a checkpoint."""


class ConfigError(UserError):
    """A setting, flag, config file or name (task, stage, plug-in) that cannot be used."""


class DataError(UserError):
    """A data set, class list or record file that cannot be used; the message names the path and the problem."""


class CheckpointError(UserError):
    """A checkpoint or weights file that cannot be used; the message names the file and the problem."""


class RunFolderError(UserError):
    """A run folder that another live process writes, or that holds another source's or config's run."""


class PathError(UserError):
    """A file-system failure (read-only, no space, permission denied, a file where a folder should
    be), as one line naming the path and the cause: ``cannot write out/x/checkpoint.pth: No space
    left on device``."""

    @classmethod
    def from_os_error(cls, err: OSError, path: str | os.PathLike | None = None, verb: str = "write") -> PathError:
        where = path if path is not None else (err.filename or "?")
        cause = err.strerror or str(err) or type(err).__name__
        return cls(f"cannot {verb} {where}: {cause}")
