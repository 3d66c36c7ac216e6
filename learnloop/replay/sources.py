"""Recorded events for a replay: the schema's JSON lines, or CSV with a column mapping.

Every source yields :class:`Record` s in file order, each with its 1-based line number and
either the raw JSON bytes of one event (decoded later by the same
:class:`~learnloop.events.EventDecoder` as the live consumer) or, for a CSV row that cannot
even be read, a :class:`~learnloop.events.Rejection`.

A CSV row becomes the JSON object the schema describes, through a :class:`CsvMapping`:

- a field is read from the column of the same name (``user_id``, ``ts``, …; a column
  ``context.device`` is the context key ``device``) unless ``columns`` names another;
- ``constants`` fill a field for every row (a file of impressions: ``type=impression``);
- ``types`` rename values of the ``type`` column (``view=impression``); others pass as is;
- without an ``event_id`` column a row's id is ``line-{n}`` (no de-duplication then);
- cells are text: ``ts``, ``value`` and context cells that read as numbers become numbers
  (``ts`` in epoch seconds, or RFC 3339), empty cells are left out.

>>> mapping = CsvMapping.parse("user_id=uid,ts=time,context.pos=position",
...                            constants="type=impression")
>>> rows = ["uid,time,product,position", "u1,1767225600.5,i9,3"]
>>> [record] = csv_records(rows, mapping.with_columns(item_id="product"))
>>> orjson.loads(record.value)  # doctest: +NORMALIZE_WHITESPACE
{'event_id': 'line-2', 'user_id': 'u1', 'ts': 1767225600.5, 'item_id': 'i9',
 'type': 'impression', 'context': {'pos': 3}}
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import orjson

from learnloop.errors import ConfigError
from learnloop.events import Event, Rejection

#: The event fields a column can feed (and ``context.KEY``, one per context key).
FIELDS = tuple(name for name in Event.model_fields if name != "context")
_NUMERIC = ("ts", "value")


@dataclass(frozen=True, slots=True)
class Record:
    """One line (or CSV row) of the file: its line number, and its bytes or why not."""

    line: int
    value: bytes | Rejection


def jsonl_records(lines: Iterable[bytes]) -> Iterator[Record]:
    """One record per non-blank line, the bytes as they are (blank lines are skipped)."""
    for number, raw in enumerate(lines, start=1):
        raw = raw.strip()
        if raw:
            yield Record(number, raw)


def _pairs(spec: str | None, what: str) -> dict[str, str]:
    """``a=b,c=d`` as a dict; a malformed pair is a :class:`ConfigError`."""
    out: dict[str, str] = {}
    for part in (spec or "").split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{what}: {part!r} is not NAME=VALUE")
        out[key.strip()] = value.strip()
    return out


def _check_fields(names: Iterable[str], what: str) -> None:
    unknown = [n for n in names if n not in FIELDS and not n.startswith("context.")]
    if unknown:
        raise ConfigError(f"{what}: unknown event fields {unknown}; fields are "
                          f"{', '.join(FIELDS)} (context.KEY for a context key)")


@dataclass(frozen=True)
class CsvMapping:
    """Which column feeds which event field, constants, and renamed type values."""

    columns: dict[str, str] = field(default_factory=dict)  # field → column
    constants: dict[str, str] = field(default_factory=dict)  # field → value
    types: dict[str, str] = field(default_factory=dict)  # value in the file → event type
    delimiter: str = ","

    @classmethod
    def parse(cls, columns: str | None = None, constants: str | None = None,
              types: str | None = None, delimiter: str = ",") -> CsvMapping:
        """From the command line's ``field=column,…``, ``field=value,…`` and
        ``raw=type,…`` (``tab`` or ``\\t`` as delimiter means a tab)."""
        mapping = cls(_pairs(columns, "--csv-map"), _pairs(constants, "--csv-set"),
                      _pairs(types, "--csv-types"),
                      "\t" if delimiter in ("tab", "\\t") else delimiter)
        _check_fields(mapping.columns, "--csv-map")
        _check_fields(mapping.constants, "--csv-set")
        if len(mapping.delimiter) != 1:
            raise ConfigError("--csv-delimiter must be one character (or 'tab')")
        return mapping

    def with_columns(self, **columns: str) -> CsvMapping:
        return replace(self, columns={**self.columns, **columns})

    def resolve(self, header: list[str]) -> dict[str, int]:
        """Field → column index for this header; a mapped column it lacks is an error."""
        missing = [c for f, c in self.columns.items() if c not in header]
        if missing:
            raise ConfigError(f"--csv-map names columns the header lacks: {missing}; "
                              f"the header has {header}")
        index = {name: n for n, name in enumerate(header)}
        found = {f: index[f] for f in (*FIELDS, *header)
                 if f in index and (f in FIELDS or f.startswith("context."))}
        mapped = {f: index[c] for f, c in self.columns.items()}
        return {f: n for f, n in {**found, **mapped}.items() if f not in self.constants}

    def event(self, cells: list[str], where: dict[str, int], line: int) -> dict:
        """The schema's JSON object for one row."""
        obj: dict = {"event_id": f"line-{line}"}
        context: dict = {}
        for name, value in [*((f, cells[n]) for f, n in where.items()),
                            *self.constants.items()]:
            if value == "":
                continue
            if name == "type":
                value = self.types.get(value, value)
            if name.startswith("context."):
                context[name.removeprefix("context.")] = _number(value, integer=True)
            else:
                obj[name] = _number(value) if name in _NUMERIC else value
        if context:
            obj["context"] = context
        return obj


def _number(text: str, integer: bool = False) -> str | int | float:
    """``text`` as an int (when ``integer``) or float if it reads as one, else as is."""
    if integer:
        try:
            return int(text)
        except ValueError:
            pass
    try:
        return float(text)
    except ValueError:
        return text


def csv_records(lines: Iterable[str], mapping: CsvMapping) -> Iterator[Record]:
    """One record per CSV row after the header; a row with the wrong number of cells is a
    rejection (``invalid_csv``), reported by the line it ends on."""
    reader = csv.reader(lines, delimiter=mapping.delimiter)
    header = next(reader, None)
    if header is None:
        return
    where = mapping.resolve([name.strip() for name in header])
    for cells in reader:
        line = reader.line_num
        if not cells or cells == [""]:
            continue
        if len(cells) != len(header):
            yield Record(line, Rejection("invalid_csv", f"{len(cells)} cells, the header has "
                                                        f"{len(header)}"))
            continue
        try:
            yield Record(line, orjson.dumps(mapping.event(cells, where, line)))
        except orjson.JSONEncodeError:  # undecodable bytes (read as surrogates)
            yield Record(line, Rejection("not_utf8", "the row is not valid UTF-8"))


def read_records(path: Path, fmt: str | None = None,
                 mapping: CsvMapping | None = None) -> list[Record]:
    """Every record of the file at ``path``: ``fmt`` ``jsonl`` or ``csv`` (by default
    ``csv`` for a ``.csv`` or ``.tsv`` name, else ``jsonl``)."""
    fmt = fmt or ("csv" if path.suffix.lower() in (".csv", ".tsv") else "jsonl")
    if fmt == "jsonl":
        with path.open("rb") as lines:
            return list(jsonl_records(lines))
    if fmt != "csv":
        raise ConfigError(f"unknown format {fmt!r}: jsonl or csv")
    if mapping is None:
        mapping = CsvMapping(delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
    with path.open(encoding="utf-8", errors="surrogateescape", newline="") as lines:
        return list(csv_records(lines, mapping))
