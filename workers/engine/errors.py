"""The engine's user-fixable error: raised when the input (recipe, dataset, request) needs changing.

Anything else escaping the engine is a bug or an environment failure, and is reported as such.
"""


class EngineUserError(ValueError):
    """The caller can fix this by changing the request; the message says how."""
