"""Every CSV the app writes goes through here, so that no cell of a user's text is a formula.

File and class names come from users (an API key holder can upload `=HYPERLINK(...)`); a
spreadsheet that opens the CSV would run a cell starting with = + - @, a tab or a carriage return
(OWASP, "CSV Injection"). Such a cell is written with a leading single quote, which spreadsheets
show as text and hide. Numbers stay numbers (a probability, a negative number we write).

The quoting can be undone exactly (`shown`): a cell that already starts with quotes before one of
those characters gets one more, so reading a CSV back (the report's tables, the batch's table)
gives the names as the user gave them.
"""
import csv
import io
import re

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _is_quoted_formula(text: str) -> bool:
    """Whether `text`, once any leading quotes are stripped, starts like a formula (and is not a number)."""
    bare = text.lstrip("'")
    return bare.startswith(FORMULA_STARTS) and not _NUMBER.fullmatch(bare)


def safe_cell(value):
    """The value to write: text that a spreadsheet could run as a formula gets a leading quote."""
    if isinstance(value, str) and _is_quoted_formula(value):
        return "'" + value
    return value


def shown(cell: str) -> str:
    """The text a cell written by safe_cell stood for (its added quote taken off)."""
    if cell.startswith("'") and _is_quoted_formula(cell[1:]):
        return cell[1:]
    return cell


class _Writer:
    """csv.writer with every cell passed through safe_cell."""

    def __init__(self, out, **kwargs):
        self._writer = csv.writer(out, **kwargs)

    def writerow(self, row):
        return self._writer.writerow([safe_cell(value) for value in row])

    def writerows(self, rows):
        for row in rows:
            self.writerow(row)


class _DictWriter(csv.DictWriter):
    """csv.DictWriter with every cell passed through safe_cell."""

    def writerow(self, rowdict):
        return super().writerow({key: safe_cell(value) for key, value in rowdict.items()})

    def writerows(self, rowdicts):
        for rowdict in rowdicts:
            self.writerow(rowdict)


def writer(out, **kwargs) -> _Writer:
    return _Writer(out, **kwargs)


def dict_writer(out, fieldnames, **kwargs) -> csv.DictWriter:
    return _DictWriter(out, fieldnames=fieldnames, **kwargs)


def read_dicts(source):
    """Rows of a CSV this module wrote (a file or its text), each cell as the user gave it."""
    reader = csv.DictReader(io.StringIO(source) if isinstance(source, str) else source)
    for row in reader:
        yield {key: shown(value) if isinstance(value, str) else value for key, value in row.items()}


def harden(text: str, **writer_kwargs) -> str:
    """A CSV written before this module existed, with any formula-like cell quoted; the same text
    when there is none (a file written through this module never has one)."""
    rows = list(csv.reader(io.StringIO(text)))
    if not any(cell.startswith(FORMULA_STARTS) and safe_cell(cell) != cell for row in rows for cell in row):
        return text
    out = io.StringIO()
    writer(out, **writer_kwargs).writerows(rows)
    return out.getvalue()
