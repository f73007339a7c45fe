"""The one error every data problem raises."""


class DataError(ValueError):
    """A dataset, image or download problem.

    The message says what was received, what was expected and how to fix it, so the command
    line can print it as it is and exit non-zero.
    """
