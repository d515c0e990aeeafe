#!/usr/bin/env python3
"""Which pages of its own binary a running process holds in memory, by ELF
section and, for .text, by crate (issue 30: RSS at 1 000 devices).

    python3 scripts/resident_pages.py PID [BINARY]

BINARY defaults to /proc/PID/exe; it needs its symbol table (the release
and dist builds keep it). Reads /proc/PID/maps and /proc/PID/pagemap (root,
or the process's own user with CAP_SYS_ADMIN, for the present bits), so a
page counts when it is mapped into the process, whether the process touched
it or the kernel mapped it around a page that was touched (fault-around,
64 KB). A .text page is split between the crates of the functions on it, by
their bytes.
"""

import bisect
import collections
import os
import re
import struct
import subprocess
import sys

PAGE = os.sysconf("SC_PAGE_SIZE")


def binary_mappings(pid, binary):
    real = os.path.realpath(binary)
    for line in open(f"/proc/{pid}/maps"):
        parts = line.split()
        if len(parts) >= 6 and os.path.realpath(parts[5]) == real:
            start, end = (int(x, 16) for x in parts[0].split("-"))
            yield start, end, int(parts[2], 16)


def resident_pages(pid, binary):
    """Page numbers relative to the load address (a PIE's vaddr 0)."""
    mappings = list(binary_mappings(pid, binary))
    if not mappings:
        raise SystemExit(f"process {pid} maps nothing of {binary}")
    base = min(start - offset for start, _, offset in mappings)
    pages = set()
    with open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        for start, end, _ in mappings:
            count = (end - start) // PAGE
            pagemap.seek(start // PAGE * 8)
            entries = pagemap.read(count * 8)
            for i in range(count):
                (entry,) = struct.unpack_from("<Q", entries, i * 8)
                if entry >> 63 & 1:
                    pages.add((start - base) // PAGE + i)
    return pages


def sections(binary):
    out = subprocess.run(["readelf", "-SW", binary], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        m = re.match(r"\s*\[\s*\d+\]\s+(\S+)\s+\S+\s+([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)", line)
        if m and int(m.group(2), 16):
            found.append((int(m.group(2), 16), int(m.group(3), 16), m.group(1)))
    return found


def functions(binary):
    out = subprocess.run(["nm", "-C", "-S", "-n", "--defined-only", binary],
                         capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        parts = line.split(" ", 3)
        if len(parts) == 4 and parts[2] in "tTwW":
            found.append((int(parts[0], 16), int(parts[1], 16), parts[3]))
    return found


def crate_of(symbol):
    # `<tract_core::ops::X as core::fmt::Debug>::fmt` is tract_core's.
    m = re.match(r"<?([A-Za-z_][A-Za-z0-9_]*)", symbol)
    return m.group(1) if m else "(unnamed)"


def main():
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    pid = sys.argv[1]
    binary = sys.argv[2] if len(sys.argv) == 3 else os.readlink(f"/proc/{pid}/exe")
    pages = resident_pages(pid, binary)
    print(f"{binary}: {len(pages) * PAGE / 1e6:.2f} MB resident")
    by_section = collections.Counter()
    all_sections = sections(binary)
    for page in pages:
        names = [name for vaddr, size, name in all_sections if vaddr <= page * PAGE < vaddr + size]
        by_section[names[0] if names else "(between sections)"] += PAGE
    for name, size in by_section.most_common():
        if size >= 10_000:
            print(f"  {name:24s} {size / 1e6:6.2f} MB")

    text = next((s for s in all_sections if s[2] == ".text"), None)
    if text is None:
        return
    funcs = functions(binary)
    starts = [f[0] for f in funcs]
    by_crate = collections.Counter()
    for page in pages:
        low, high = page * PAGE, (page + 1) * PAGE
        if not text[0] <= low < text[0] + text[1]:
            continue
        covered = 0
        i = max(bisect.bisect_right(starts, low) - 1, 0)
        while i < len(funcs) and funcs[i][0] < high:
            start, size, name = funcs[i]
            overlap = min(high, start + size) - max(low, start)
            if overlap > 0:
                by_crate[crate_of(name)] += overlap
                covered += overlap
            i += 1
        by_crate["(padding, no symbol)"] += PAGE - covered
    print(f".text by crate:")
    for name, size in by_crate.most_common(25):
        print(f"  {name:28s} {size / 1e6:6.2f} MB")


if __name__ == "__main__":
    main()
