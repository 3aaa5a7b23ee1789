"""File writing that never leaves a torn file or replaces what it must not, names checked before a long job
writes them, output names claimed for the length of a job, and file hashing. Standard library only (no torch).

- `atomic_write_bytes`: temp + fsync + rename, so a crash or a full disk leaves the old file or the new one;
  a device, FIFO or terminal (/dev/null, /dev/stdout) is written into, never replaced by a regular file.
- `check_file_name`: before anything starts, a name that can be written (folder, permissions, length).
- `Claim`: an output name held by this process from the start of a job to its end, so that two instances
  never finish into one name and the later silently replaces the earlier.
- `fitted_name`: the hidden names beside an output (temp, partial, lock) cut to what the file system takes.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import stat
import tempfile
from pathlib import Path

from autoencoded.errors import UserError

LOCK_INSIDE = ".autoencoded.lock"  # a claimed folder's lock file (a run folder)
NAME_MAX = 255  # bytes in one name, where the file system does not say (ext4, xfs, btrfs, tmpfs, APFS: 255)
PATH_MAX = 4096


def name_max(folder: str | os.PathLike) -> int:
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return NAME_MAX


def fitted_name(name: str, prefix: str, suffix: str, folder: str | os.PathLike, reserve: int = 0) -> str:
    """prefix + name + suffix, with `name` cut where the whole (plus `reserve` bytes that mkstemp adds) would
    be longer than a name in `folder` may be: a legal 250-byte output name must not fail at the end of the
    show on its 270-byte hidden partial. A cut name is tagged with a hash of the whole, so two long names
    that start alike still get different hidden names."""
    limit = name_max(folder) - reserve
    full = prefix + name + suffix
    if len(os.fsencode(full)) <= limit:
        return full
    tag = "~" + hashlib.sha256(os.fsencode(name)).hexdigest()[:8]
    room = max(0, limit - len(os.fsencode(prefix + tag + suffix)))
    return prefix + os.fsdecode(os.fsencode(name)[:room]) + tag + suffix


def temp_beside(path: Path, suffix: str) -> tuple[int, Path]:
    """A new hidden temp file `.NAME.xxxxxxxx<suffix>` beside `path` (NAME cut to fit): (fd, path)."""
    prefix = fitted_name(path.name, ".", ".", path.parent, reserve=8 + len(os.fsencode(suffix)))
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    return fd, Path(tmp)


def _kind(mode: int) -> str:
    for test, word in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return word
    return "not a regular file"


def special_file(path: str | os.PathLike) -> str | None:
    """What `path` is when it exists and is not a regular file ('a FIFO', 'a character device', ...), else None.
    Links are followed: /dev/stdout is what it points to."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return None if stat.S_ISREG(mode) else _kind(mode)


def _write_into(path: Path, data: bytes) -> None:
    """Write `data` into an existing device, FIFO or terminal, as `echo > /dev/null` does."""
    fifo = stat.S_ISFIFO(os.stat(path).st_mode)
    try:  # a FIFO nobody reads would block for ever: ENXIO at once instead
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | (os.O_NONBLOCK if fifo else 0))
    except OSError as exc:
        if exc.errno == errno.ENXIO and fifo:
            raise OSError(errno.ENXIO, "no process is reading the FIFO") from None
        raise
    try:
        if fifo:
            os.set_blocking(fd, True)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, rename over `path`, fsync the folder.

    A crash or a full disk at any point leaves either the old file or the new one, never a torn one. A
    `path` that is a device, a FIFO or a terminal is written into instead: renaming over /dev/null would
    replace the system's /dev/null with a regular file.
    """
    path = Path(path)
    if special_file(path) is not None:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a folder", str(path))
        _write_into(path, data)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_beside(path, ".tmp")
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
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"{folder}: cannot write {what} there ({exc.strerror or exc})") from None
    return folder


def check_file_name(path: str | os.PathLike, option: str = "", special: bool = False) -> Path:
    """A file we will write later (a recording, a report), checked before anything starts: not a folder, in a
    folder that exists and is writable, a name the file system takes. Unlike check_writable it makes no
    folder: a mistyped folder in a file name is one line, not a new folder. `option` (like "--stats-json")
    starts the message. special: whether an existing device, FIFO or terminal is fine (a report is written
    into it); a video is renamed into place at its end, which such a file cannot take, so it is refused."""
    p = Path(path)
    said = f"{option} {p}" if option else str(p)
    # the lengths first: a name too long makes every other question about it an OSError
    size, limit = len(os.fsencode(p.name)), name_max(p.parent if p.parent.is_dir() else ".")
    if size > limit:
        raise UserError(f"{said}: the name is {size} bytes long; this file system takes at most {limit}")
    whole = len(os.fsencode(os.path.abspath(p)))
    if whole >= PATH_MAX:
        raise UserError(f"{said}: the path is {whole} bytes long; at most {PATH_MAX - 1}")
    if p.is_dir():
        raise UserError(f"{said}: is a folder, expected a file name")
    kind = special_file(p)
    if kind is not None:
        if special:
            return p
        raise UserError(f"{said}: is {kind}, not a regular file; give a file name")
    if not p.parent.is_dir():
        raise UserError(f"{said}: no such folder {p.parent}")
    if not os.access(p.parent, os.W_OK):
        raise UserError(f"{said}: folder {p.parent} is not writable")
    return p


def free_name(path: Path, infix: str = "") -> Path:
    """NAME<infix>.EXT, or the first of NAME<infix>-2.EXT, NAME<infix>-3.EXT ... that does not exist yet."""
    candidate, n = path.with_name(f"{path.stem}{infix}{path.suffix}"), 1
    while os.path.lexists(candidate):
        n += 1
        candidate = path.with_name(f"{path.stem}{infix}-{n}{path.suffix}")
    return candidate


def write_failed(path: str | os.PathLike, exc: OSError, what: str) -> Exception:
    """The UserError for a write that failed part-way (a full disk): says what was not written."""
    return UserError(f"{path}: cannot write {what} ({exc.strerror or exc}); nothing was written")


class NameInUse(UserError):
    """Another process holds the Claim on this name."""


class Claim:
    """An output name this process writes, held from the start of a job to its end: a second autoencoded that
    asks for the same name (a recording, a render, a run folder) is refused at once, instead of both
    finishing and the later silently replacing the earlier.

    It is an flock on a hidden `.NAME.lock` beside the name (inside it for a folder). The kernel drops an
    flock when its process ends, however it ends, so a crash never leaves a name claimed; the lock file a
    kill -9 leaves behind is taken over by the next claim."""

    def __init__(self, path: str | os.PathLike, what: str, inside: bool = False) -> None:
        self.path = Path(path)
        self.lock = self.path / LOCK_INSIDE if inside else \
            self.path.parent / fitted_name(self.path.name, ".", ".lock", self.path.parent)
        while True:
            try:
                fd = os.open(self.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise UserError(f"{self.path}: cannot claim the name for {what} ({exc.strerror or exc})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_pid(fd)
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise NameInUse(f"{self.path}: another autoencoded{f' (pid {holder})' if holder else ''} is "
                                    f"writing {what} there; stop it or choose another name") from None
                raise UserError(f"{self.path}: cannot claim the name for {what} ({exc.strerror or exc})") from None
            # its last holder may have removed this lock file between our open and our flock: hold the one on disk
            try:
                same = os.stat(self.lock).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        try:  # who holds it, for the message of the next claim (on a full disk the lock holds without it)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass
        self._fd: int | None = fd

    def release(self) -> None:
        """Remove the lock file and drop the lock. Safe to call twice."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if os.stat(self.lock).st_ino == os.fstat(fd).st_ino:
                os.unlink(self.lock)  # while still locked: a claim that opened it retries on the new one
        except OSError:
            pass
        os.close(fd)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
    except (OSError, ValueError):
        return None
