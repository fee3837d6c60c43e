"""User-facing errors: each says, in one line, which file or setting is wrong and how.

Entry scripts catch ``UserError`` and print its message alone, never a library traceback.
"""


class UserError(ValueError):
    """Bad input from the user: a config, a path, a data set or a checkpoint."""
