"""User-facing errors: each carries one line that says what went wrong and what to do."""


class RagtuneError(Exception):
    """An error caused by the user's input or environment, reported without a traceback."""


class StoreError(RagtuneError):
    """The store directory is missing, corrupt, locked, or built with another model."""


class StoreBusy(StoreError):
    """Another process is writing the store (its first build, say): nothing is wrong with it, wait."""


class NotAStore(StoreError):
    """The path given as a store is none (missing, a file, a folder of something else): nothing to check or repair."""


class InputError(RagtuneError):
    """A source file or argument cannot be used (names the file, the line, and the fix)."""


def missing_dependency(module: str, install: str) -> RagtuneError:
    """The error for an optional dependency that is not installed, with the exact install command."""
    return RagtuneError(f"optional dependency '{module}' is not installed; run: pip install {install}")
