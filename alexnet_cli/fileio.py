"""Atomic writes: every result file appears whole or not at all (temp file, fsync, rename)."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from alexnet_cli.errors import InputError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it over `path`.

    On any exception the temporary file is removed and `path` is left as it was, so a crash
    (or kill -9: the temp name never shadows the real one) never leaves a half-written result.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except FileNotFoundError:
        raise InputError(
            f"{path}: folder {directory} does not exist; create it or choose another path"
        ) from None
    except PermissionError:
        raise InputError(f"{path}: folder {directory} is not writable; choose a writable path") from None
    except OSError as e:  # a read-only or full file system
        raise InputError(
            f"{path}: cannot write in {directory} ({os_reason(e)}); choose another path"
        ) from None
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results get the usual permissions
    try:
        yield tmp
        commit(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise InputError(
            f"{path}: could not write ({os_reason(e)}); free space or choose another path"
        ) from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def commit(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Make a finished temporary file `path`, durably: fsync it, rename it, fsync the folder.
    (Resumable writers keep a fixed partial name and call this once it is complete.)"""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(Path(path).parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def os_reason(e: Exception) -> str:
    """The OS's words for a failed write ("No space left on device"), not a library's whole
    report: h5py raises OSError or RuntimeError with HDF5's multi-line trace, errno inside."""
    errno = getattr(e, "errno", None) or re.search(r"errno = (\d+)", str(e))
    if errno:
        return os.strerror(errno if isinstance(errno, int) else int(errno.group(1)))
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_new_file(path: str | os.PathLike, force: bool = False) -> Path:
    """Before long work: `path` can be written at the end and replaces nothing unless `force`."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a file name")
    if path.exists() and not force:
        raise InputError(f"{path}: already exists; choose another name or add --force to replace it")
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise InputError(f"{path}: folder {directory} does not exist; create it or choose another path")
    return path
