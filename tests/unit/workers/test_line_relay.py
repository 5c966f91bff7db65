"""The supervisor's relay of its workers' output: whole lines, whatever their size and however they arrive."""

import os
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extauth.logs import stream_apart_from
from extauth.workers import LineRelay

PIPE_BUF = 4096

#: One source's lines (by length; up to three times PIPE_BUF) and the sizes of the writes that carry them.
sources = st.lists(
    st.tuples(st.lists(st.integers(0, 3 * PIPE_BUF), min_size=1, max_size=12),
              st.lists(st.integers(1, 5 * PIPE_BUF), min_size=1, max_size=8),
              st.booleans()),
    min_size=2, max_size=4)


def line(source: int, number: int, length: int) -> bytes:
    """A line that names its source and place, padded to at least `length` bytes (newline excluded)."""
    label = f"{source}:{number}:".encode()
    return label + b"x" * max(0, length - len(label))


def write_in_pieces(fd: int, data: bytes, sizes: list[int]) -> None:
    """Write `data` in writes of the given sizes (cycled): a worker's batches, split anywhere, even mid-line."""
    offset, turn = 0, 0
    while offset < len(data):
        size = sizes[turn % len(sizes)]
        offset += os.write(fd, data[offset:offset + size])
        turn += 1
    os.close(fd)


def drain(fd: int, into: list[bytes]) -> None:
    while chunk := os.read(fd, 1024):  # a slow reader: the destination pipe fills and writers contend for it
        into.append(chunk)
    os.close(fd)


@settings(max_examples=40, deadline=None)
@given(sources=sources, log_lines=st.integers(0, 20))
def test_relayed_lines_arrive_whole_and_in_each_sources_order(
        sources: list[tuple[list[int], list[int], bool]], log_lines: int) -> None:
    """Concurrent sources written in arbitrary pieces (lines longer than PIPE_BUF, a last line cut short by a dying
    worker) and the supervisor's own log lines all come out of one pipe as whole lines, each source's in order."""
    relay = LineRelay()
    out_read, out_write = os.pipe()
    received: list[bytes] = []
    reader = threading.Thread(target=drain, args=(out_read, received))
    reader.start()
    expected: dict[str, list[bytes]] = {}
    writers = []
    for index, (lengths, sizes, cut_short) in enumerate(sources):
        lines = [line(index, number, length) for number, length in enumerate(lengths)]
        expected[str(index)] = lines
        data = b"".join(item + b"\n" for item in lines)
        read_end, write_end = os.pipe()
        relay.start(os.fdopen(read_end, "rb"), out_write)
        writers.append(threading.Thread(target=write_in_pieces,
                                        args=(write_end, data[:-1] if cut_short else data, sizes)))
    log = relay.stream(out_write)
    expected["log"] = [f"log:{number}:".encode() for number in range(log_lines)]
    for writer in writers:
        writer.start()
    for number in range(log_lines):
        log.write(f"log:{number}:\n")
    for writer in writers:
        writer.join()
    relay.join(timeout=30)
    os.close(out_write)
    reader.join()

    output = b"".join(received)
    assert output.endswith(b"\n") or not output
    by_source: dict[str, list[bytes]] = {key: [] for key in expected}
    for received_line in output.split(b"\n")[:-1]:
        source = received_line.split(b":", 1)[0]
        by_source[source.decode()].append(received_line)
    assert by_source == expected


@pytest.mark.parametrize(("audit_output", "log_stream"), [
    ("stdout", "stderr"), ("stderr", "stdout"), ("/var/log/extauth/audit.jsonl", "stderr")])
def test_operational_logs_take_the_standard_stream_the_audit_leaves_free(audit_output: str, log_stream: str) -> None:
    """Logs go to stderr unless the audit stream is on stderr, then to stdout: the two never share a stream."""
    import sys

    assert stream_apart_from(audit_output) is getattr(sys, log_stream)
