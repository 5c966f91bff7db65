"""Reading the small files a configuration names (keys, secrets): bounded, and never from a device or a pipe."""

import stat
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
