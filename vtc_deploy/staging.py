"""Atomic writes: a file or a whole output directory is written under a hidden temporary name beside the target and
renamed into place at the end, so an interrupted or failed export, rebake or build leaves nothing half-written.

Owns: ``atomic_write`` (one file), ``staged_directory`` (a directory) and the clean-up of temporaries left by killed
processes. Every atomic write in vtc-deploy goes through one of the two.
Imports: the standard library and vtc_deploy.errors.

SIGTERM and Ctrl-C remove the temporary directory before the process exits (the CLI reports "interrupted"). A
SIGKILL cannot be handled: its temporary directory (``.NAME.partial-PID-*``, never the target itself) is removed by
the next export into the same parent, once process PID is gone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from vtc_deploy.errors import ExportError


def atomic_write(path: str | Path, data: bytes | str | Callable[[Path], object]) -> Path:
    """Write ``path`` atomically: ``data`` (bytes, UTF-8 text, or a function that writes the file at the path it is
    given, e.g. ``lambda p: torch.save(obj, p)``) goes to a temporary file in the same directory, renamed over ``path``
    when complete, with the usual permissions (``0o666`` less the umask, not mkstemp's ``0o600``); on any failure the
    temporary is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if callable(data):
            os.close(fd)
            data(Path(tmp))
        else:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def check_output_dir(out: Path, *, force: bool) -> None:
    """Refuse early: an existing non-empty target without ``force``, a target that is a file, an unwritable parent."""
    if out.exists():
        if not out.is_dir():
            raise ExportError("output exists and is not a directory", path=out)
        if any(out.iterdir()) and not force:
            raise ExportError("output directory is not empty; pass --force to replace it", path=out)
    parent = _existing_parent(out)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ExportError(f"cannot write into {parent} (permission denied)", path=out)


def _existing_parent(out: Path) -> Path:
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    return parent


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(parent: Path, name: str) -> None:
    """Remove temporaries of earlier exports into ``parent/name`` whose process no longer exists."""
    if not parent.is_dir():
        return
    prefix = f".{name}.partial-"
    for entry in parent.iterdir():
        if not entry.name.startswith(prefix) or not entry.is_dir():
            continue
        pid_text = entry.name[len(prefix) :].split("-", 1)[0]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and not _pid_alive(int(pid_text)):
            shutil.rmtree(entry, ignore_errors=True)


@contextlib.contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt (in the main thread) so that ``finally`` blocks run and clean up."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous: Any = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def staged_directory(out: str | Path, *, force: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory; on success it replaces ``out`` atomically, on any failure it is removed."""
    out = Path(out).absolute()
    check_output_dir(out, force=force)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(out.parent, out.name)
    except OSError as exc:
        raise ExportError(f"cannot create {out.parent} ({exc.strerror})", path=out) from None
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{os.getpid()}-", dir=out.parent))
    except OSError as exc:
        raise ExportError(f"cannot write into {out.parent} ({exc.strerror})", path=out) from None
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it 0700; the published artifact gets the usual permissions
    try:
        with _terminate_as_exit():
            yield staging
            _publish(staging, out, force=force)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _publish(staging: Path, out: Path, *, force: bool) -> None:
    check_output_dir(out, force=force)  # the target may have changed while we worked
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    try:
        os.replace(staging, out)
    except OSError as exc:
        if old is not None:
            os.replace(old, out)
        raise ExportError(f"cannot move the artifact into place ({exc.strerror})", path=out) from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
