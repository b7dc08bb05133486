"""The one exception family of vtc-deploy.

Owns: ``VtcError`` and its subclasses, and ``one_line`` (the one rule for folding another library's exception into
the one-line message of ours). ``str(error)`` is the whole user-facing message: one line that names the file (when
there is one) and what was wrong; the CLI prints it and exits non-zero, a traceback never reaches a user.
Imports: nothing.
"""

from __future__ import annotations

from pathlib import Path


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``exc`` as one line of at most ``limit`` characters: for an OSError (FFmpeg's errors are OSErrors) its reason and
    file name without the errno, else its whole message; every run of whitespace (newlines included) folded to one
    space; the exception's type name when the message is empty."""
    reason = getattr(exc, "strerror", None)
    if reason:
        filename = getattr(exc, "filename", None)
        reason = f"{reason}: {filename}" if filename else reason
    text = " ".join(str(reason or exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class VtcError(Exception):
    """Base class: every error the library raises on purpose."""

    def __init__(self, message: str, *, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        text = " ".join(str(message).split())  # one line, always
        super().__init__(f"{self.path}: {text}" if self.path else text)


class UsageError(VtcError):
    """An option or argument combination that cannot work."""


class ConfigError(VtcError):
    """A configuration file or value is invalid (unknown key, wrong type, value outside the allowed set)."""


class LabelError(VtcError):
    """A class-name list or prompt template is invalid."""


class CheckpointError(VtcError):
    """A checkpoint or weights file cannot be loaded as a model."""


class DownloadError(VtcError):
    """Weights that must be downloaded could not be fetched (offline, unknown tag)."""


class VideoDecodeError(VtcError):
    """A video file cannot be opened or the frames asked for cannot be decoded."""


class ArtifactError(VtcError):
    """An exported artifact directory is missing, incomplete, tampered with or from a newer schema."""


class ExportError(VtcError):
    """The export itself failed (graph capture, checker, output directory)."""


class ParityError(VtcError):
    """The exported graph disagrees with the PyTorch model beyond the tolerances of its precision."""


class BackendUnavailable(VtcError):
    """An inference backend (or a provider of it) is not installed or cannot run on this machine."""


class DataError(VtcError):
    """A training/evaluation dataset list is invalid (missing files, labels out of range, empty split)."""


class ServeError(VtcError):
    """The server cannot start or run (a port taken, Triton failing to start)."""
