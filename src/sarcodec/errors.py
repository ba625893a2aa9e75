"""Error classes. Each family maps to one documented CLI exit code.

| exit | class            | meaning                                                   |
|------|------------------|-----------------------------------------------------------|
| 1    | SarcodecError    | anything else sarcodec detected                           |
| 2    | (usage)          | bad command-line usage (typer/click)                      |
| 3    | InputError       | input raster/array unusable: missing, unreadable, dtype   |
| 4    | ModelError       | model missing, unknown, corrupt, or not the one encoded   |
| 5    | FormatError      | .sarc container truncated, corrupted, wrong version       |
| 6    | ResourceError    | out of memory / device unavailable                        |
| 7    | OutputError      | output exists (no --force), not writable                  |
"""
from __future__ import annotations


class SarcodecError(Exception):
    exit_code = 1


class InputError(SarcodecError, ValueError):
    exit_code = 3


class ModelError(SarcodecError):
    exit_code = 4


class UnknownModelError(ModelError, KeyError):
    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "unknown model"


class ModelMismatchError(ModelError):
    """The bitstream was encoded with a different model (id or weights hash)."""


class FormatError(SarcodecError):
    exit_code = 5


class NotASarcFileError(FormatError):
    """Wrong magic bytes: the data is not a .sarc container."""


class TruncatedFileError(FormatError):
    """The container ends early (missing trailer, tile or mask bytes)."""


class CorruptedFileError(FormatError):
    """A checksum or structural check failed."""


class UnsupportedVersionError(FormatError):
    """The container was written by a newer format version."""


class ResourceError(SarcodecError):
    exit_code = 6


class OutputError(SarcodecError):
    exit_code = 7


class Interrupted(BaseException):
    """SIGINT / SIGTERM during a command (exit 128 + the signal: 130, 143). A BaseException, like
    KeyboardInterrupt, so that no ``except Exception`` on the way swallows it; ``finally`` blocks
    (temporary outputs, worker pools) still run."""

    def __init__(self, signum: int):
        import signal

        self.signum = int(signum)
        self.exit_code = 128 + self.signum
        super().__init__(signal.Signals(self.signum).name)
