"""Domain errors: anything a user can cause becomes one of these and one line on stderr."""

from __future__ import annotations


class RecError(Exception):
    """An error caused by input, configuration or artifacts; shown as one line, never a traceback."""

    exit_code = 1


class ConfigError(RecError):
    """Unknown config key, wrong type or unreadable config file."""

    exit_code = 2


class DataError(RecError):
    """Bad input data: missing file or column, wrong encoding, unparsable value, empty result."""

    def __init__(
        self,
        message: str,
        path: object | None = None,
        line: int | None = None,
        column: str | None = None,
    ) -> None:
        where = ""
        if path is not None:
            where = str(path)
            if line is not None:
                where += f":{line}"
            if column is not None:
                where += f" (column {column!r})"
            where += ": "
        super().__init__(f"{where}{message}")
        self.path = path
        self.line = line
        self.column = column


class ArtifactError(RecError):
    """Missing, half-written or incompatible run directory or artifact."""
