"""Unix socket files: extauth replaces only a socket nobody answers on, and removes only the sockets it made.

A path that holds anything else (a regular file, a directory, a symlink) or a socket a live process serves on is
refused, never deleted; on stop a socket is removed only if the file at its path is still the one this process
created (same inode), so a successor that took the path over keeps it.
"""

import contextlib
import os
import socket
import stat
from pathlib import Path


def socket_path_problem(path: Path) -> str | None:
    """Why a socket cannot be created at `path`, judged without connecting: something other than a socket is
    there, or its parent cannot be created or written. None when it can (or a socket is already there)."""
    try:
        mode = path.lstat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return creatable_problem(path)
    except OSError as error:
        return f"cannot inspect {path}: {error.strerror}"
    if not stat.S_ISSOCK(mode):
        return f"{path} exists and is not a socket; extauth does not replace it"
    return None


def creatable_problem(path: Path) -> str | None:
    """Why `path` cannot be created by this user, missing parent directories included (extauth makes them)."""
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"cannot create {path}: {ancestor} is not a directory"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"cannot create {path}: {ancestor} is not writable"
    return None


def claim_socket_path(path: Path) -> None:
    """Make `path` free for a new socket: create its directory, remove a socket left by a dead process; raise
    OSError for one a live process answers on and for anything that is not a socket."""
    path.parent.mkdir(parents=True, exist_ok=True)
    problem = socket_path_problem(path)
    if problem is not None:
        raise OSError(f"cannot listen on unix:{path}: {problem}")
    if not path.is_socket():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink(missing_ok=True)
    else:
        raise OSError(f"cannot listen on unix:{path}: another process is serving there")
    finally:
        probe.close()


SocketIdentity = tuple[int, int, int]


def socket_identity(path: Path) -> SocketIdentity:
    """What `remove_own_socket` compares: device, inode and change time of the socket just created at `path`."""
    status = path.lstat()
    return status.st_dev, status.st_ino, status.st_ctime_ns


def remove_own_socket(path: Path, identity: SocketIdentity) -> None:
    """Remove `path` if it is still the socket identified by `identity`; anything else there stays."""
    with contextlib.suppress(FileNotFoundError):
        status = path.lstat()
        if stat.S_ISSOCK(status.st_mode) and socket_identity(path) == identity:
            path.unlink()
