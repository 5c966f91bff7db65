"""Summarise collapsed stacks (py-spy `--format raw`, as `check_throughput.py --profile DIR` writes them): the
frames with the largest self and total share of the samples, line numbers folded so one function is one row.

    python bench/profile_summary.py DIR/g.txt [--top 25]
"""

import argparse
import re
from collections import Counter
from pathlib import Path

_LINE = re.compile(r":\d+\)$")


def frame_name(frame: str) -> str:
    """`send (redis/asyncio/connection.py:512)` → `send (redis/asyncio/connection.py)`, shortened to the package."""
    frame = _LINE.sub(")", frame)
    return re.sub(r"\(/\S*/(site-packages|lib/python3\.\d+|extauth)/", lambda m: "(" + (
        "extauth/" if m[1] == "extauth" else ""), frame)


def summarise(lines: list[str]) -> tuple[int, Counter[str], Counter[str]]:
    total, own, inclusive = 0, Counter[str](), Counter[str]()
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack:
            continue
        samples = int(count)
        frames = [frame_name(f) for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    return total, own, inclusive


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stacks", type=Path, help="collapsed stacks, one `frame;frame;... count` per line")
    parser.add_argument("--top", type=int, default=25, help="rows per table (default 25)")
    args = parser.parse_args()
    total, own, inclusive = summarise(args.stacks.read_text().splitlines())
    for title, counter in (("self", own), ("total", inclusive)):
        print(f"\n| {title} % | frame |\n|---:|---|")
        for frame, samples in counter.most_common(args.top):
            print(f"| {100 * samples / total:.1f} | `{frame}` |")
    print(f"\n{total} samples")


if __name__ == "__main__":
    main()
