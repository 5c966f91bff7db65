"""Socket paths: extauth replaces only a socket nobody answers on, and removes only the socket it created."""

import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from extauth.unixsocket import claim_socket_path, remove_own_socket, socket_identity


def dead_socket(path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))  # closed without unlinking: what a killed process leaves


def regular_file(path: Path) -> None:
    path.write_text("someone else's")


def directory(path: Path) -> None:
    path.mkdir()


def fifo(path: Path) -> None:
    os.mkfifo(path)


def symlink_to_regular_file(path: Path) -> None:
    regular_file(path.with_name("target"))
    path.symlink_to(path.with_name("target"))


def symlink_to_dead_socket(path: Path) -> None:
    dead_socket(path.with_name("target.sock"))
    path.symlink_to(path.with_name("target.sock"))


def dangling_symlink(path: Path) -> None:
    path.symlink_to(path.with_name("nowhere"))


NOT_A_SOCKET = [regular_file, directory, fifo, symlink_to_regular_file, symlink_to_dead_socket, dangling_symlink]


@pytest.mark.parametrize("make", NOT_A_SOCKET, ids=lambda make: make.__name__)
def test_anything_but_a_socket_at_the_path_is_refused_and_kept(tmp_path: Path, make: Callable[[Path], None]) -> None:
    """Whatever spelling of "not a socket" is there, claiming the path fails and leaves it exactly as it was."""
    path = tmp_path / "extauth.sock"
    make(path)
    before = path.lstat()
    with pytest.raises(OSError, match=f"cannot listen on unix:{path}: {path} exists and is not a socket; "
                                      "extauth does not replace it"):
        claim_socket_path(path)
    after = path.lstat()
    assert (after.st_ino, after.st_mode, after.st_size) == (before.st_ino, before.st_mode, before.st_size)


def test_a_socket_left_by_a_dead_process_is_replaced(tmp_path: Path) -> None:
    """Nobody answers on it: it is removed so the new server can bind (a restart after a crash)."""
    path = tmp_path / "extauth.sock"
    dead_socket(path)
    claim_socket_path(path)
    assert not path.exists()


def test_a_socket_a_live_process_serves_on_is_refused(tmp_path: Path) -> None:
    """Another instance is serving there: refused, and its socket stays."""
    path = tmp_path / "extauth.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen()
        with pytest.raises(OSError, match="another process is serving there"):
            claim_socket_path(path)
        assert path.is_socket()


def test_only_the_socket_it_created_is_removed(tmp_path: Path) -> None:
    """A socket that replaced ours at the same path (a successor) is not removed by our cleanup."""
    path = tmp_path / "extauth.sock"
    dead_socket(path)
    ours = socket_identity(path)
    path.rename(tmp_path / "ours.sock")  # moved away (kept, so its inode is not reused at once)
    dead_socket(path)  # a successor's socket at the same path
    remove_own_socket(path, ours)
    assert path.is_socket()
    remove_own_socket(path, socket_identity(path))
    assert not path.exists()
