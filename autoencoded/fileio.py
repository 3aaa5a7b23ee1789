"""File writing that never leaves a torn file, and file hashing. Standard library only (no torch)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, rename over `path`, fsync the folder.

    A crash or a full disk at any point leaves either the old file or the new one, never a torn one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; a finished file gets ordinary permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_writable(folder: str | os.PathLike, what: str) -> Path:
    """Make `folder` if needed and prove a file can be written there, before a long job writes `what`.

    A read-only file system, a missing permission or a path through a file is one line (UserError)."""
    from autoencoded.errors import UserError

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"{folder}: cannot write {what} there ({exc.strerror or exc})") from None
    return folder


def check_file_name(path: str | os.PathLike, option: str = "") -> Path:
    """A file we will write later (a recording, a report), checked before anything starts: not a folder, in a
    folder that exists and is writable. Unlike check_writable it makes no folder: a mistyped folder in a file
    name is one line, not a new folder. `option` (like "--stats-json") starts the message."""
    from autoencoded.errors import UserError

    p = Path(path)
    said = f"{option} {p}" if option else str(p)
    if p.is_dir():
        raise UserError(f"{said}: is a folder, expected a file name")
    if not p.parent.is_dir():
        raise UserError(f"{said}: no such folder {p.parent}")
    if not os.access(p.parent, os.W_OK):
        raise UserError(f"{said}: folder {p.parent} is not writable")
    return p


def write_failed(path: str | os.PathLike, exc: OSError, what: str) -> Exception:
    """The UserError for a write that failed part-way (a full disk): says what was not written."""
    from autoencoded.errors import UserError

    return UserError(f"{path}: cannot write {what} ({exc.strerror or exc}); nothing was written")
