"""Expected failures. Each carries one line that names the problem and the fix; the CLI prints
it without a traceback and exits 2."""


class LossjaxError(Exception):
    """Base class for errors a user can fix (config, data, results folder)."""


class ConfigError(LossjaxError):
    """A config file or override is invalid. The message starts with the key's full path."""


class DataError(LossjaxError):
    """A dataset file is missing, corrupt, or fails its checksum."""


class ResultsError(LossjaxError):
    """A results folder is missing, incomplete, or belongs to another config."""


def one_line(e: BaseException, limit: int | None = None) -> str:
    """An exception's message on one line (its type's name where it has none), cut to its first
    ``limit`` characters where given: every error lossjax reports is one line."""
    return (" ".join(str(e).split()) or type(e).__name__)[:limit]
