"""Plain-text tables for the terminal: a header row, aligned columns, no borders."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["render", "shorten"]


def render(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """The table as lines of text; columns whose index is in ``right`` are right-aligned."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), *(line(row) for row in rows)])


def shorten(text: str, width: int = 40) -> str:
    """``text``, cut from the left with an ellipsis when longer than ``width``."""
    return text if len(text) <= width else "\N{HORIZONTAL ELLIPSIS}" + text[-(width - 1) :]
