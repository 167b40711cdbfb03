"""The one table renderer: markdown and HTML from the same header and rows."""

from __future__ import annotations

from kdsam.eval.compare import comparison, to_html, to_markdown
from kdsam.report.tables import html_table, markdown_table


def test_markdown_and_html_hold_the_same_cells() -> None:
    header, rows = ["model", "Dice"], [["a|b", "0.900"], ["<c>", "-"]]
    assert markdown_table(header, rows) == "| model | Dice |\n| --- | --- |\n| a\\|b | 0.900 |\n| <c> | - |\n"
    page = html_table(header, rows, css_class="t")
    assert page.startswith('<table class="t">') and "<td>&lt;c&gt;</td><td>-</td>" in page
    assert "<tr><th>model</th><th>Dice</th></tr>" in page


def test_comparison_goes_through_it_with_a_two_level_header() -> None:
    results = [
        {"model": m, "data": "kvasir:/d/Kvasir-SEG", "split": "test", "n_images": 4, "n_skipped": 0, "mean": mean}
        for m, mean in (("t", {"dice": 0.91, "iou": 0.8, "hd95": 3.25, "nsd": None}), ("s", {"dice": 0.5}))
    ]
    table = comparison(results)
    md, page = to_markdown(table), to_html(table)
    assert "| t | 0.910 | 0.800 | 3.25 | – |" in md and "| s | 0.500 | – | – | – |" in md
    assert '<th rowspan="2">model</th><th colspan="4">kvasir Kvasir-SEG (test) (n=4)</th>' in page
    assert "<td>t</td><td>0.910</td><td>0.800</td><td>3.25</td><td>–</td>" in page
