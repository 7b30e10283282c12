"""Run every benchmark section in one process and write docs/benchmarks.md with the machine and date.

Each section module exposes ``run() -> str`` returning Markdown. Sections run in order, in this one
process, so the ratios inside a section are measured side by side under the same load.
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

SECTIONS = [
    "benchmarks.training",
    "benchmarks.inference",
    "benchmarks.binary",
    "benchmarks.boosters",
    "benchmarks.bundles",
    "benchmarks.drift",
    "benchmarks.load",
    "benchmarks.experiments",
    "benchmarks.assignment",
    "benchmarks.batch",
]
OUT = Path("docs/benchmarks.md")


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, "
        f"Python {platform.python_version()}"
    )


def main(argv: list[str]) -> int:
    only = set(argv)
    parts = [
        "# Benchmarks",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()} by `make bench`. "
        "The machines are noisy: compare the ratios inside a section (measured side by side in one run), "
        "not absolute times across runs.",
        "",
    ]
    for name in SECTIONS:
        if only and name.rsplit(".", 1)[-1] not in only:
            continue
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # The section has not been written yet.
            raise
        started = time.perf_counter()
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        parts.append(module.run().rstrip() + "\n")
        print(f"bench: {name} done in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(parts))
    print(f"wrote {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
