"""File helpers shared by the admin tool and the daemon."""

import os
import tempfile


def write_file_atomically(path, data, mode=0o644):
    """Write ``data`` to ``path`` through a temporary file in the same
    directory, fsync it and rename it over ``path``: a crash leaves either the
    old file or the new one, never half of one."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=".keyx-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
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
