"""User-facing errors.

Anything a user can cause (a missing file, a corrupt image, a config typo) raises
:class:`MeddistillError` with a one-line message; the CLI prints it and exits with
status 2 instead of showing a traceback. Programming errors stay ordinary exceptions.
"""


class MeddistillError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""
