"""Reading the small files a configuration names (keys, secrets): bounded, and never from a device or a pipe;
and the environment variables a secret-valued field may name instead."""

import os
import stat
from collections.abc import Mapping
from pathlib import Path

#: Key files are a few KiB; a path naming a device or a huge file is a mistake, not a key.
MAX_KEY_FILE_BYTES = 1024 * 1024


def read_key_file(path: Path) -> bytes:
    """The file's bytes; a FIFO, a device (`/dev/zero`) or a file over MAX_KEY_FILE_BYTES is refused unread with
    a ValueError `cannot read PATH: why`."""
    try:
        status = path.stat()
        if not stat.S_ISREG(status.st_mode):
            raise ValueError(f"cannot read {path}: not a regular file")
        if status.st_size > MAX_KEY_FILE_BYTES:
            raise ValueError(f"cannot read {path}: {status.st_size} bytes; the limit is {MAX_KEY_FILE_BYTES}")
        return path.read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror or error}") from None


def read_secret_file(path: Path) -> bytes:
    """A secret mounted as a file (a Kubernetes Secret, a Docker secret), without the trailing newline `echo` or an
    editor leaves; ValueError naming the path, never the content, when it is unreadable or empty."""
    secret = read_key_file(path).rstrip(b"\r\n")
    if not secret:
        raise ValueError(f"{path} is empty")
    return secret


def read_secret_environment(name: str, environ: Mapping[str, str] | None = None) -> bytes:
    """A secret from the environment variable `name` (a Kubernetes `secretKeyRef`), taken as it is; ValueError
    naming the variable, never a value, when it is unset or empty."""
    value = (os.environ if environ is None else environ).get(name)
    if value is None:
        raise ValueError(f"environment variable {name} is not set")
    if not value:
        raise ValueError(f"environment variable {name} is empty")
    return os.fsencode(value)
