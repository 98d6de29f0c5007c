"""A batch job's rows: read from CSV (every value text, typed here by the card) or JSON
Lines, each with its row id; and the one output line written per row.

Step Functions' CSV ItemReader hands the chunk function the same thing ``csv.DictReader``
gives the local runner (an object of strings keyed by the header), so both go through
``chunk_row`` and a row scores the same wherever the job runs.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from ..cards import ModelCard
from ..service import ChunkRow

# A column (CSV) or key (JSON Lines) that names the row in the output; without it a row
# is named by its number, counting data rows from 1.
ROW_ID = "row_id"
FORMATS = {".csv": "csv", ".jsonl": "jsonl"}
_INTEGER = re.compile(r"^[+-]?\d+$")


def format_of(name: str) -> str:
    """``csv`` or ``jsonl``, from the file's extension."""
    for ext, fmt in FORMATS.items():
        if name.lower().endswith(ext):
            return fmt
    raise ValueError(f"{name!r}: a batch input is a .csv or a .jsonl file")


def _number(text: str) -> Any:
    """What a JSON client would have sent for this text: an int, a float, or the text
    itself (which validation then refuses as not a number, naming the field). Python's
    own spellings that JSON has no number for ("1_000") stay text."""
    if text.isascii() and text.isdigit():  # the common case, without a regex
        return int(text)
    stripped = text.strip()
    if "_" in stripped:
        return text
    try:
        return int(stripped) if _INTEGER.match(stripped) else float(stripped)
    except ValueError:
        return text


def numeric_fields(card: ModelCard) -> frozenset[str]:
    return frozenset(s.name for s in card.inputs if s.type in ("number", "integer"))


def typed(card: ModelCard, record: dict[str, Any], numeric: frozenset[str] | None = None
          ) -> dict[str, Any]:
    """A CSV row as the JSON record ``/v1`` takes: numbers for number and integer fields,
    text for the rest, and an empty cell as a missing value."""
    if numeric is None:
        numeric = numeric_fields(card)
    return {name: _number(value) if name in numeric else value
            for name, value in record.items()
            if value is not None and value != ""}  # missing: validation says if it may be


def chunk_rows(card: ModelCard, fmt: str, items: Iterable[tuple[int, Any]]
               ) -> list[ChunkRow]:
    """``chunk_row`` for each ``(number, item)`` of a chunk, the card read once."""
    numeric = numeric_fields(card)
    return [chunk_row(card, fmt, number, item, numeric) for number, item in items]


def chunk_row(card: ModelCard, fmt: str, number: int, item: Any,
              numeric: frozenset[str] | None = None) -> ChunkRow:
    """Row ``number`` (1-based) of an input: a CSV row (an object of strings), or a JSON
    Lines line (its text, or the object Step Functions parsed from it)."""
    if fmt == "jsonl" and isinstance(item, str | bytes):
        try:
            item = orjson.loads(item)
        except orjson.JSONDecodeError:
            return ChunkRow(number, None, _problem(
                "malformed_row", f"row {number} is not valid JSON"))
    if not isinstance(item, dict):
        return ChunkRow(number, None, _problem(
            "not_an_object", f"row {number} must be a JSON object of fields"))
    if None in item:  # csv.DictReader's key for cells beyond the header
        return ChunkRow(number, None, _problem(
            "malformed_row", f"row {number} has more cells than the header has columns"))
    record = dict(item)
    row_id = record.pop(ROW_ID, None)
    if row_id is None or row_id == "" or isinstance(row_id, dict | list):
        row_id = number
    elif type(row_id) is int and not -(2**63) <= row_id < 2**64:
        row_id = str(row_id)  # beyond what JSON writers agree on: its digits name it
    if fmt == "csv":
        record = typed(card, record, numeric)
    return ChunkRow(row_id, record)


def _problem(code: str, message: str) -> dict[str, Any]:
    return {"code": code, "message": message, "details": []}


def read_items(path: Path, fmt: str) -> Iterator[tuple[int, Any]]:
    """``(row number, item)`` for every data row of a local file, streamed."""
    if fmt == "csv":
        with path.open(newline="", encoding="utf-8-sig") as f:
            for number, item in enumerate(csv.DictReader(f), start=1):
                yield number, item
        return
    with path.open("rb") as f:
        number = 0
        for line in f:
            if not line.strip():
                continue  # a blank line (a trailing newline) is no row
            number += 1
            yield number, line


def output_line(line: dict[str, Any]) -> bytes:
    return orjson.dumps(line, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"
