"""Tables for people: a header and rows of already formatted cells -> markdown or HTML.

The one table renderer of kdsam: the comparison of evaluations, the benchmark, the demo and the
report page all go through it, so a table reads the same wherever it appears.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

Row = Sequence[str]


def markdown_table(header: Row, rows: Sequence[Row]) -> str:
    """A GitHub markdown table; `|` inside a cell is escaped."""

    def line(cells: Row) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), "|" + " --- |" * len(header), *map(line, rows)]) + "\n"


def html_table(
    header: Row, rows: Sequence[Row], groups: Sequence[tuple[str, int]] = (), css_class: str | None = None
) -> str:
    """An HTML table. `groups`: an extra header row above `header` of (title, columns spanned) for
    every column but the first, whose header then spans both rows (datasets over their metrics)."""
    e = html.escape
    cls = f' class="{e(css_class)}"' if css_class else ""
    if groups:
        top = "".join(f'<th colspan="{span}">{e(title)}</th>' for title, span in groups)
        head = f'<tr><th rowspan="2">{e(header[0])}</th>{top}</tr>\n<tr>'
        head += "".join(f"<th>{e(h)}</th>" for h in header[1:]) + "</tr>"
    else:
        head = "<tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>"
    body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>\n" for row in rows)
    return f"<table{cls}>\n<thead>{head}</thead>\n<tbody>\n{body}</tbody>\n</table>\n"
