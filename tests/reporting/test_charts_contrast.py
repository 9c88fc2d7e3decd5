"""Issue 32 item 13: every confusion-matrix cell's text colour has WCAG AA contrast on its shade."""
from transferapp.reporting import charts


def _contrast(a, b):
    hi, lo = sorted((charts.relative_luminance(a), charts.relative_luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_each_shade_gets_the_text_colour_that_reads_on_it():
    for n in range(11):
        rows = charts.confusion_rows([[n, 10 - n], [10 - n, n]], ["a", "b"])
        for cell in (c for row in rows for c in row["cells"]):
            shade = charts.shade_over_white(tuple(int(v) for v in cell["rgb"].split(", ")), cell["alpha"])
            text = (255, 255, 255) if cell["dark"] else (0, 0, 0)  # app.css: td.dark white, td black
            assert _contrast(text, shade) >= 4.5, (cell, round(_contrast(text, shade), 2))
