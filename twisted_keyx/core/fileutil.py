"""File helpers shared by the admin tool and the daemon."""

import contextlib
import errno
import fcntl
import os
import stat
import tempfile


def _write_temporary(directory, data, mode):
    """A new file in ``directory`` holding ``data`` with ``mode``, fsynced;
    its path.  Raises OSError (nothing is left behind)."""
    fd, temporary = tempfile.mkstemp(prefix=".keyx-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(temporary)
        raise
    return temporary


def write_file_atomically(path, data, mode=0o644):
    """Write ``data`` to ``path`` through a temporary file in the same
    directory, fsync it and rename it over ``path``: a crash leaves either the
    old file or the new one, never half of one."""
    directory = os.path.dirname(os.path.abspath(path))
    temporary = _write_temporary(directory, data, mode)
    try:
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def create_file_exclusively(path, data, mode=0o600):
    """Make ``path`` holding ``data``, whole or not at all, and never in
    place of a file that exists: written to a temporary file and hard-linked
    to ``path``, which raises FileExistsError if another process made
    ``path`` first.  Raises OSError otherwise."""
    temporary = _write_temporary(os.path.dirname(os.path.abspath(path)), data, mode)
    try:
        os.link(temporary, path)
    finally:
        os.unlink(temporary)


def open_regular(path, follow_symlinks=True):
    """A file descriptor open for reading on ``path``, which must be a
    regular file: a named pipe, a device or a folder raises OSError
    (``strerror`` "not a regular file") instead of blocking the caller (the
    daemon's reactor) until a writer comes.  O_NONBLOCK makes the open of a
    pipe return at once; a regular file ignores it.  With
    ``follow_symlinks=False`` a symbolic link is refused too (ELOOP).
    Raises OSError (FileNotFoundError for a missing file)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
    if not follow_symlinks:
        flags |= os.O_NOFOLLOW
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path, limit):
    """At most ``limit`` bytes of the regular file ``path``
    (:func:`open_regular`); a caller asks for one byte more than it
    accepts, to tell a file too large.  Raises OSError."""
    fd = open_regular(path)
    try:
        return read_at_most(fd, limit)
    finally:
        os.close(fd)


@contextlib.contextmanager
def locked(path):
    """Hold an exclusive lock for ``path`` (``fcntl.flock`` on ``PATH.lock``,
    created mode 0600 and left in place) for the ``with`` block: a
    read-modify-write of ``path`` inside it cannot interleave with another
    one.  Readers need no lock, since :func:`write_file_atomically` replaces
    the file whole.  The lock file, not ``path`` itself, because the rename
    gives ``path`` a new inode at every write.  The lock file is never a
    symbolic link (a dangling one made its target) nor anything but a
    regular file.  Raises OSError."""
    fd = os.open(path + ".lock",
                 os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path + ".lock")
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def exposure_warning(path, consequence=""):
    """A warning if group or others may read ``path`` (its permission bits
    allow it), else None: ``PATH is readable by group or others (mode
    0644)CONSEQUENCE; chmod 600 PATH``.  A file that cannot be stat'ed gets
    no warning; reading it will say why."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None
    if not mode & (stat.S_IRGRP | stat.S_IROTH):
        return None
    return f"{path} is readable by group or others (mode {mode:04o}){consequence}; chmod 600 {path}"


def read_at_most(fd, limit):
    """Read from file descriptor ``fd`` until its end or ``limit`` bytes: a
    caller asks for one byte more than it accepts, to tell a file too large."""
    chunks = []
    while limit > 0:
        chunk = os.read(fd, limit)
        if not chunk:
            break
        chunks.append(chunk)
        limit -= len(chunk)
    return b"".join(chunks)


def why_not_writable(path):
    """Why a new file cannot be made at ``path`` (its folder is missing or
    not writable), or None."""
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        return f"the folder {folder} does not exist"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"the folder {folder} is not writable"
    return None
