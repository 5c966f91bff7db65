"""What the policy watch compares: a cheap stat of every policy file, no extra dependency, and it follows
Kubernetes ConfigMap symlink swaps (a swap changes the inode)."""

import os
from pathlib import Path

from extauth.documents.loader import policy_files, rule_files

#: (file, mtime_ns, size, inode) per policy file.
Fingerprint = tuple[tuple[str, int, int, int], ...]


def files_fingerprint(roots: tuple[Path, ...]) -> Fingerprint:
    """The fingerprint of every policy file under `roots` (a missing root or file is part of the fingerprint)."""
    entries = []
    for root in roots:
        try:
            files = policy_files(root) + rule_files(root)
        except OSError:
            continue
        for file in files:
            try:
                stat = os.stat(file)
            except OSError:
                entries.append((str(file), -1, -1, -1))
                continue
            entries.append((str(file), stat.st_mtime_ns, stat.st_size, stat.st_ino))
    return tuple(entries)
