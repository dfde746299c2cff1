"""Plain-text tables for the terminal."""


def format_table(header, rows):
    """Format rows as left-aligned columns under a header and a rule.

    Parameters
    ----------
    header : list of str
    rows : list of list
        Cells are converted with ``str``; floats should be formatted first.

    Returns
    -------
    text : str
    """
    cells = [[str(h) for h in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for index, row in enumerate(cells):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def count_noun(number, noun):
    """Return the count with the noun in singular or plural: '1 slide', '3 slides'."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
