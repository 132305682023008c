"""CSV as head office writes it for people's spreadsheets (the payments export, the console's
downloads): a text cell that a spreadsheet would take for a formula (its first character one of
= + - @, a tab or a carriage return) gets a single quote before it (OWASP, "CSV injection");
kiosk ids, transaction ids, key serials and contract accounts come from kiosks and billing
files, so nothing in them is trusted. The amount columns stay numbers, negative ones too."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, TextIO

#: what a spreadsheet takes as the start of a formula
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
NUMBER = re.compile(r"-?\d+(\.\d+)?")


def cell(value: Any, *, number: bool = False) -> Any:
    """The value as written: text that could start a formula, quoted; in a number column an
    integer, or text that is a plain number ("-12.50"), as it is."""
    if not isinstance(value, str):
        return value
    if number and NUMBER.fullmatch(value):
        return value
    return "'" + value if value.startswith(FORMULA_START) else value


def field(value: Any) -> str:
    """One cell as CSV text (RFC 4180): in double quotes when it holds a comma, a quote or a
    line break, CR too (Python's csv module leaves a lone CR unquoted when lines end in LF,
    and the file then breaks where the CR stands)."""
    text = "" if value is None else str(value)
    if any(c in text for c in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def write_csv(out: TextIO, header: Sequence[str], rows: Iterable[Sequence[Any] | Mapping[str, Any]],
              *, numbers: Collection[str] = ()) -> None:  # fmt: skip
    """The header and the rows (sequences in the header's order, or mappings by its names),
    every cell through `cell`, lines ending in LF; `numbers`: the columns that hold amounts."""
    out.write(",".join(field(cell(h)) for h in header) + "\n")
    for row in rows:
        values = [row.get(h) for h in header] if isinstance(row, Mapping) else list(row)
        cells = [cell(v, number=h in numbers) for h, v in zip(header, values, strict=True)]
        out.write(",".join(field(c) for c in cells) + "\n")
