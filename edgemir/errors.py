"""One error type for everything a user can get wrong: printed as one line, exit code 2."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input (file, bundle, device, option), not a bug."""

    exit_code = 2
