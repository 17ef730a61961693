"""Errors with a user-facing message and a documented exit code.

The CLI catches only :class:`OtactlError`; everything else is a bug and shows a traceback.
Third-party errors are translated with ``raise ... from``.

    OtactlError (1)
    ├── UsageError (2)            bad arguments or a malformed user-written file
    │   └── InputFileError (2)    names file, line and field
    ├── KeyAccessError (1)        missing key, wrong passphrase, corrupt or foreign key file
    ├── StoreError (1)            unreachable, unauthorised or inconsistent store
    │   ├── NotFoundError (1)
    │   └── ConflictError (1)     a concurrent writer won (optimistic concurrency)
    ├── VerificationError (1)     a signature, hash or metadata check failed
    ├── TelemetrySourceError (1)  a telemetry source cannot be read; nothing was recorded
    ├── GateFailedError (3)       a gate failed; the rollout was rolled back or paused
    └── WaitingError (4)          waiting for approval, soak or data, or timed out
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    GATE_FAILED = 3
    WAITING = 4


class OtactlError(Exception):
    """Base error: ``str(err)`` is the one line the user sees."""

    exit_code: ExitCode = ExitCode.ERROR

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(OtactlError):
    exit_code = ExitCode.USAGE


class InputFileError(UsageError):
    """A user-written file is malformed: the message names file, line and field."""

    def __init__(
        self, path: str, problem: str, *, line: int | None = None, field: str | None = None
    ) -> None:
        where = path if line is None else f"{path}:{line}"
        what = f"{where}: {field}: {problem}" if field else f"{where}: {problem}"
        super().__init__(what)
        self.path = path
        self.line = line
        self.field = field


class KeyAccessError(OtactlError):
    pass


class StoreError(OtactlError):
    pass


class NotFoundError(StoreError):
    pass


class ConflictError(StoreError):
    pass


class VerificationError(OtactlError):
    pass


class TelemetrySourceError(OtactlError):
    """A telemetry source cannot be read (missing database, unreachable Prometheus): an error with
    the source's own cause, never a gate verdict. Raised before the step writes anything."""


class GateFailedError(OtactlError):
    exit_code = ExitCode.GATE_FAILED


class WaitingError(OtactlError):
    exit_code = ExitCode.WAITING
