"""Concatenate the benchmark sections into docs/benchmarks.md.

Each benchmark script writes its own section, ``docs/benchmarks/<name>.md``.
This script joins them, in file-name order, under one page title and
writes ``docs/benchmarks.md``, which the Sphinx documentation includes
(through myst-parser). Run it after any benchmark script:

    python benchmarks/assemble.py

Headings inside each section move one level down, so every section's
title becomes a second-level heading of the page.
"""

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

HEADER = """# Benchmarks

Every number on this page was printed by a script in `benchmarks/`, which
also wrote its section here; the section states the command, the machine,
the date and the package versions of its run. `python benchmarks/assemble.py`
joins the sections into this page.
"""

EMPTY = """
No benchmark section has been written yet: run a script in `benchmarks/`,
then `python benchmarks/assemble.py`.
"""

_HEADING = re.compile(r"^(#{1,5})(\s)", flags=re.MULTILINE)
_FENCE = re.compile(r"^(```|~~~)")


def demote_headings(text):
    """Add one ``#`` to every Markdown heading outside code fences."""
    lines = []
    in_fence = False
    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence:
            line = _HEADING.sub(r"#\1\2", line, count=1)
        lines.append(line)
    return "\n".join(lines)


def assemble(sections_dir, output):
    """Write the page from every ``*.md`` in ``sections_dir``; return the section paths."""
    sections = sorted(Path(sections_dir).glob("*.md"))
    parts = [HEADER]
    if not sections:
        parts.append(EMPTY)
    for path in sections:
        text = path.read_text(encoding="utf-8").strip()
        parts.append(f"\n<!-- from {path.name} -->\n\n{demote_headings(text)}\n")
    Path(output).write_text("".join(parts), encoding="utf-8")
    return sections


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default=ROOT / "docs" / "benchmarks", type=Path,
                        help="folder of the per-benchmark sections")
    parser.add_argument("--out", default=ROOT / "docs" / "benchmarks.md", type=Path,
                        help="page to write")
    args = parser.parse_args(argv)
    sections = assemble(args.sections, args.out)
    print(f"{args.out}: {len(sections)} sections ({', '.join(p.stem for p in sections) or 'none'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
