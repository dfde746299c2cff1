"""Concatenate the benchmark sections into docs/benchmarks.md.

Each benchmark script writes its own section, ``docs/benchmarks/<name>.md``.
This script joins them, in file-name order, under one page title and
writes ``docs/benchmarks.md``, which the Sphinx documentation includes
(through myst-parser). Run it after any benchmark script:

    python benchmarks/assemble.py

Headings inside each section are shifted so that every section's title
becomes a second-level heading of the page.
"""

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

HEADER = """# Benchmarks

Every number on this page was printed by a script in `benchmarks/`, which
also wrote its section here. Each section states the command, the machine,
the date and the package versions of its run. `python benchmarks/assemble.py`
joins the sections into this page.
"""

EMPTY = """
No benchmark section has been written yet: run a script in `benchmarks/`,
then `python benchmarks/assemble.py`.
"""

_HEADING = re.compile(r"^(#{1,6})\s")
_FENCE = re.compile(r"^(```|~~~)")


def _headings(text):
    """Yield (line index, heading level) of the Markdown headings outside code fences."""
    in_fence = False
    for index, line in enumerate(text.splitlines()):
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence:
            match = _HEADING.match(line)
            if match:
                yield index, len(match.group(1))


def shift_headings(text, top_level=2):
    """Shift every heading so that the section's highest heading is at ``top_level``.

    Sections start at different levels (one with ``#``, another with
    ``##``); after the shift each section sits one level under the page title.
    """
    found = list(_headings(text))
    if not found:
        return text
    shift = top_level - min(level for _, level in found)
    lines = text.splitlines()
    for index, level in found:
        new_level = min(max(level + shift, 1), 6)
        lines[index] = "#" * new_level + lines[index][level:]
    return "\n".join(lines)


def assemble(sections_dir, output):
    """Write the page from every ``*.md`` in ``sections_dir``; return the section paths."""
    sections = sorted(Path(sections_dir).glob("*.md"))
    parts = [HEADER]
    if not sections:
        parts.append(EMPTY)
    for path in sections:
        text = path.read_text(encoding="utf-8").strip()
        parts.append(f"\n<!-- from {path.name} -->\n\n{shift_headings(text)}\n")
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
