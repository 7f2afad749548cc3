"""Directories written beside their target and swapped into place whole; read as one version.

Writing (``replace_dir``): the files go into a fresh sibling ``.NAME.textcnn-tmp-XXXXXXXX``, created
with mode 0777 minus the umask (as ``mkdir`` would), flock-ed by its writer, and fsync-ed. Then:

* Linux (``renameat2(RENAME_EXCHANGE)``): the new directory and the old one swap names in one
  atomic step, so the target path always names a complete directory, old or new, whenever the
  writer is killed. The old version, now under the temporary name, is deleted.
* Elsewhere, or where the filesystem refuses the exchange (EINVAL, e.g. some network
  filesystems): two renames, target -> temporary name, new -> target. Between them (a few
  microseconds, or forever if the writer is killed right there) the target path does not exist;
  the previous version is then complete under its temporary name, and the next write removes it.

Temporary directories left by killed writers are removed after the next successful write to
the same target: only names with this module's prefix whose lock no live writer holds (flock,
released by the kernel when a process dies). They are never read as the target.

Reading (``read_files``): the directory is opened once and every file is read through that
handle, so the files come from one version. A writer deletes the version it replaced; a reader
that finds a file gone while the path now names another directory reads again (a few times).
"""

from __future__ import annotations

import ctypes
import hashlib
import errno
import os
import secrets
import shutil
import stat
import sys
from pathlib import Path
from typing import Callable, Iterable

try:
    import fcntl
except ImportError:  # Windows: no flock, so leftovers are not cleaned up there
    fcntl = None

RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100
_READ_ATTEMPTS = 5


def temp_prefix(target: Path) -> str:
    return f".{target.name}.textcnn-tmp-"


def replace_dir(target: Path, write: Callable[[Path], None]) -> None:
    """Calls ``write(tmp)`` on a new empty sibling of ``target``, then puts it in place of ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp, lock = _make_temp_dir(target)
    old = None
    try:
        write(tmp)
        _fsync(tmp)
        old = _swap_into_place(tmp, target)
        _fsync(target.parent)
    finally:
        for leftover in (tmp, old):  # tmp: an unfinished new version, or the old one after an exchange
            if leftover is not None:
                shutil.rmtree(leftover, ignore_errors=True)
        if lock is not None:
            os.close(lock)
    remove_stale_temps(target)


def write_file(path: Path, data: bytes) -> None:
    """A new file holding ``data``, mode 0666 minus the umask, on disk before this returns."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def file_sha256(path) -> str:
    """The SHA-256 of a file's bytes (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def replace_file(path: Path, data: bytes) -> None:
    """Replaces (or creates) one file in one step: a complete temporary sibling renamed over it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        write_file(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _make_temp_dir(target: Path) -> tuple[Path, int | None]:
    prefix = temp_prefix(target)
    while True:
        tmp = target.with_name(prefix + secrets.token_hex(4))
        try:
            os.mkdir(tmp, 0o777)  # unlike tempfile.mkdtemp (0700), the umask decides who may read it
        except FileExistsError:
            continue
        lock = _lock(tmp, blocking=True)
        if lock is None or _same_dir(tmp, lock):
            return tmp, lock
        os.close(lock)  # another writer's cleanup removed it before we held the lock: make another


def _lock(path: Path, blocking: bool) -> int | None:
    """An flock-ed handle on directory ``path``; None where flock is missing or (non-blocking) held."""
    if fcntl is None:
        return None
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _same_dir(path: Path, fd: int) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    here = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (here.st_dev, here.st_ino)


def _swap_into_place(new: Path, target: Path) -> Path | None:
    """Renames ``new`` to ``target``; returns where the replaced version now is (None: there was none)."""
    while True:
        if not os.path.lexists(target):
            try:
                os.rename(new, target)
                return None
            except OSError as e:  # another writer put a directory there meanwhile: replace that one
                if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
        exchanged = exchange(new, target)
        if exchanged:
            return new
        if exchanged is None:  # not supported here: the two-rename fallback (see the module docstring)
            aside = target.with_name(temp_prefix(target) + secrets.token_hex(4))
            os.rename(target, aside)
            os.rename(new, target)
            return aside


def exchange(a: Path, b: Path) -> bool | None:
    """Atomically swaps the names ``a`` and ``b``: True; False if one is gone; None if unsupported."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return None
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err == errno.ENOENT:
        return False
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return None
    raise OSError(err, os.strerror(err), str(b))


_RENAMEAT2: list = []


def _renameat2():
    """glibc's renameat2 (2.28+), or None off Linux or with an older C library."""
    if not _RENAMEAT2:
        fn = None
        if sys.platform.startswith("linux"):
            try:
                fn = ctypes.CDLL(None, use_errno=True).renameat2
                fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
                fn.restype = ctypes.c_int
            except (OSError, AttributeError):
                fn = None
        _RENAMEAT2.append(fn)
    return _RENAMEAT2[0]


def remove_stale_temps(target: Path) -> list[Path]:
    """Removes temporary siblings of ``target`` that no live writer holds; returns them."""
    if fcntl is None:
        return []
    prefix, removed = temp_prefix(target), []
    try:
        entries = [e for e in os.scandir(target.parent) if e.name.startswith(prefix)]
    except OSError:
        return []
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False):
            continue
        try:
            lock = _lock(Path(entry.path), blocking=False)
        except OSError:  # gone already, or not ours to open
            continue
        if lock is None:  # a live writer holds it
            continue
        try:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
        finally:
            os.close(lock)
    return removed


def _fsync(path: Path) -> None:
    """Puts a directory's entries on disk (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_files(path: Path, names: Iterable[str]) -> dict[str, bytes | OSError]:
    """The bytes of each named file of directory ``path``, all from the same version of it.

    A file that cannot be read maps to its OSError (FileNotFoundError when absent; IsADirectoryError
    or an EINVAL OSError when it is not a regular file). Raises OSError when ``path`` cannot be
    opened as a directory.
    """
    names = list(names)
    if os.open not in os.supports_dir_fd:  # Windows: by path, without the one-version guarantee
        if not os.path.isdir(path):
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(path))
        return {name: _read_at(os.path.join(path, name)) for name in names}
    for _ in range(_READ_ATTEMPTS):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            out = {name: _read_at(name, fd) for name in names}
            if not any(isinstance(v, FileNotFoundError) for v in out.values()) or _same_dir(path, fd):
                return out
        finally:
            os.close(fd)
    return out  # replaced during every attempt: report what the last one found


def _read_at(name: str, dir_fd: int | None = None) -> bytes | OSError:
    try:  # O_NONBLOCK: a FIFO in the directory must not hang the reader
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0), dir_fd=dir_fd)
    except OSError as e:
        return e
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            return IsADirectoryError(errno.EISDIR, "it is a directory, not a file")
        if not stat.S_ISREG(mode):
            return OSError(errno.EINVAL, "it is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    except OSError as e:
        return e
    finally:
        os.close(fd)
