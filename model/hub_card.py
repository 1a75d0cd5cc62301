"""Read an scvi-hub model card (``README.md``) back into its parts.

scvi-tools writes the card from ``scvi.hub._template``: YAML front matter between ``---``
lines (license, library name, tags such as ``model_cls_name:TOTALVI``), then "Model
Description", "Metrics" (cell-wise and gene-wise coefficient of variation, differential
expression: markdown tables, one per modality after a line ``Modality: rna``, or "Not
provided by uploader"), "Model Properties" (model parameters and setup arguments as JSON, the
data registry and summary statistics as tables) and "Training" (data and code URLs).

The same card may come flattened (text copied from the hub's web page): headings, fences and
bold lost, JSON objects and pipe tables left on their own lines. Both read the same way: a
section starts at a line whose text, without markdown ``#``, ``**``, HTML tags and a trailing
``:``, is one of the known labels and runs to the next label; in it, the first balanced JSON
object or the pipe tables are taken.

The card is untrusted input: :func:`read_model_card` refuses files over a size limit or not
UTF-8; parsing is linear in the text (no backtracking patterns) and a bad section is left
empty with a note instead of failing.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["HubCard", "ModelCardError", "parse_model_card", "read_model_card"]

#: Largest card :func:`read_model_card` reads (scvi-hub cards are a few kB).
MAX_CARD_BYTES = 1_000_000
NOT_PROVIDED = "not provided by uploader"
#: Most columns and rows kept of one table (a crafted card cannot build a huge frame).
MAX_TABLE_COLUMNS = 50
MAX_TABLE_ROWS = 1_000  # a DE table has a row per cell type: tens
MAX_JSON_DEPTH = 100
MAX_FRONT_MATTER = 100_000
_LABEL_LINE_MAX = 200  # longer lines are never section labels

# canonical label -> spellings (lower case, after markup is stripped)
_LABELS = {
    "description": ("model description",),
    "metrics": ("metrics",),
    "cv": ("coefficient of variation",),
    "cell_wise_cv": ("cell-wise coefficient of variation", "cell wise coefficient of variation"),
    "gene_wise_cv": ("gene-wise coefficient of variation", "gene wise coefficient of variation"),
    "de_metric": ("differential expression metric",),
    "diff_exp": ("differential expression",),
    "properties": ("model properties",),
    "model_parameters": ("model parameters",),
    "setup_arguments": ("setup data arguments", "setup arguments"),
    "data_registry": ("data registry",),
    "summary_statistics": ("summary statistics",),
    "training": ("training",),
    "references": ("references",),
}
_LABEL_OF = {spelling: label for label, names in _LABELS.items() for spelling in names}
# labels whose value follows on the same line ("**Training data url**: https://...")
_INLINE = {
    "training data url": "training_data_url",
    "training code url": "training_code_url",
    "data is minified": "data_is_minified",
}
_TAG = re.compile(r"<[^<>]*>")  # one HTML tag; linear (no nested quantifier)
_JSON_TOKEN = re.compile(r'[{}\[\]"\\]')
_MISSING = {"", "–", "—", "-", "nan", "none", "n/a", "na"}


class ModelCardError(ValueError):
    """A model card that cannot be read (too large, not UTF-8); one line naming the file."""


@dataclass(frozen=True, eq=False)
class HubCard:
    """The parts of an scvi-hub model card (empty where the card gives none).

    Metric tables are keyed by modality (``"rna"``, ``"protein"``), indexed by the table's
    first column (the metric, or the cell type), numbers as float (``–`` is NaN).
    """

    model_parameters: dict[str, Any] = field(default_factory=dict)
    setup_arguments: dict[str, Any] = field(default_factory=dict)
    summary_statistics: dict[str, int | float | str] = field(default_factory=dict)
    data_registry: dict[str, str] = field(default_factory=dict)
    data_is_minified: bool | None = None
    cell_wise_cv: dict[str, pd.DataFrame] = field(default_factory=dict)
    gene_wise_cv: dict[str, pd.DataFrame] = field(default_factory=dict)
    diff_exp: dict[str, pd.DataFrame] = field(default_factory=dict)
    description: str = ""
    tags: dict[str, tuple[str, ...]] = field(default_factory=dict)
    license: str | None = None
    library_name: str | None = None
    training_data_url: str | None = None
    training_code_url: str | None = None
    source: str = ""
    notes: tuple[str, ...] = ()

    @property
    def is_empty(self) -> bool:
        """Whether nothing of a model card was found (a README.md of another kind)."""
        return not (
            self.model_parameters
            or self.setup_arguments
            or self.summary_statistics
            or self.data_registry
            or self.has_metrics
            or self.tags
        )

    @property
    def has_metrics(self) -> bool:
        """Whether the card gives any metric table."""
        return bool(self.cell_wise_cv or self.gene_wise_cv or self.diff_exp)

    @property
    def model_cls_name(self) -> str | None:
        """The model class of the ``model_cls_name:`` tag (``"TOTALVI"``)."""
        return (self.tags.get("model_cls_name") or (None,))[0]

    @property
    def scvi_version(self) -> str | None:
        """The scvi-tools version of the ``scvi_version:`` tag."""
        return (self.tags.get("scvi_version") or (None,))[0]


def read_model_card(path: str | os.PathLike[str], *, max_bytes: int = MAX_CARD_BYTES) -> HubCard:
    """Read and parse the card at ``path``.

    Raises :class:`ModelCardError` (one line naming the file) when it is over ``max_bytes``
    or not UTF-8 text, and ``OSError`` when it cannot be read.
    """
    p = Path(path)
    with p.open("rb") as f:
        raw = f.read(max_bytes + 1)
    if len(raw) > max_bytes:
        msg = f"{p}: model card over the {max_bytes:,}-byte limit; not read"
        raise ModelCardError(msg)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        msg = f"{p}: model card is not UTF-8 text (byte {err.start:,}); not read"
        raise ModelCardError(msg) from None
    return parse_model_card(text, source=str(p))


def parse_model_card(text: str, *, source: str = "") -> HubCard:
    """The :class:`HubCard` of a card's text (markdown as scvi-tools writes it, or the
    hub page's text flattened)."""
    notes: list[str] = []
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    front, start = _front_matter(lines, notes)
    sections, inline = _sections(lines, start)
    parts: dict[str, Any] = {}
    for key in ("model_parameters", "setup_arguments"):
        body = sections.get(key)
        if body is not None:
            parts[key] = _json_object("\n".join(body), key, notes)
    stats = _first_table(sections.get("summary_statistics"), notes, "summary statistics")
    if stats is not None:
        parts["summary_statistics"] = {k: _scalar(v) for k, v in _pairs(stats)}
    registry = _first_table(sections.get("data_registry"), notes, "data registry")
    if registry is not None:
        parts["data_registry"] = dict(_pairs(registry))
    for key in ("cell_wise_cv", "gene_wise_cv", "diff_exp"):
        body = sections.get(key)
        if body is not None:
            parts[key] = _metric_tables(body, key, notes)
    description = " ".join(
        " ".join(_plain(line).split()) for line in sections.get("description", [])
    ).strip()
    minified = inline.get("data_is_minified")
    tags = _tags(front.get("tags"))
    return HubCard(
        **parts,
        data_is_minified=None if minified is None else _boolean(minified),
        description=description,
        tags=tags,
        license=_str_or_none(front.get("license")),
        library_name=_str_or_none(front.get("library_name")),
        training_data_url=_url(inline.get("training_data_url")),
        training_code_url=_url(inline.get("training_code_url")),
        source=source,
        notes=tuple(notes),
    )


# ------------------------------------------------------------------------ front matter
def _front_matter(lines: list[str], notes: list[str]) -> tuple[dict[str, Any], int]:
    """The YAML between the first two ``---`` lines (``{}`` if none), and the next line."""
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None or lines[first].strip() != "---":
        return {}, 0
    end = next((i for i in range(first + 1, len(lines)) if lines[i].strip() == "---"), None)
    if end is None:
        return {}, 0
    block = "\n".join(lines[first + 1 : end])
    if len(block) > MAX_FRONT_MATTER:
        notes.append(f"front matter over {MAX_FRONT_MATTER:,} characters: not read")
        return {}, end + 1
    try:
        import yaml

        loaded = yaml.safe_load(block)
    except ImportError:
        loaded = _simple_yaml(block)
    except Exception as err:  # any YAML error: read the block line by line instead
        notes.append(f"front matter is not valid YAML ({type(err).__name__}); read line by line")
        loaded = _simple_yaml(block)
    if not isinstance(loaded, dict):
        loaded = {}
    return loaded, end + 1


def _simple_yaml(block: str) -> dict[str, Any]:
    """``key: value`` lines and ``- item`` lists under a ``key:`` (what card data holds)."""
    out: dict[str, Any] = {}
    key: str | None = None
    for line in block.split("\n"):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("- ") and key is not None:
            if not isinstance(out.get(key), list):
                out[key] = []
            out[key].append(stripped[2:].strip().strip("'\""))
            continue
        name, sep, value = stripped.partition(":")
        if sep and not line[:1].isspace():
            key = name.strip()
            out[key] = value.strip().strip("'\"") or None
    return out


def _tags(value: Any) -> dict[str, tuple[str, ...]]:
    """``["model_cls_name:TOTALVI", "modality:rna", "modality:protein", "biology"]`` as
    ``{"model_cls_name": ("TOTALVI",), "modality": ("rna", "protein"), "biology": ()}``."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return {}
    out: dict[str, list[str]] = {}
    for tag in value:
        if not isinstance(tag, (str, int, float, bool)):  # aliases of lists: not tags
            continue
        name, sep, val = str(tag).partition(":")
        values = out.setdefault(name.strip(), [])
        if sep and val.strip():
            values.append(val.strip())
    return {k: tuple(v) for k, v in out.items() if k}


# ---------------------------------------------------------------------------- sections
def _plain(line: str) -> str:
    """A line's text without HTML tags, ``**`` and leading ``#`` or ``-`` markers."""
    s = _TAG.sub("", line) if "<" in line else line
    s = s.replace("**", "").strip()
    return s.lstrip("#").strip().removeprefix("- ").strip()


def _label(line: str) -> str | None:
    """The canonical section label a line is, if it is one."""
    if len(line) > _LABEL_LINE_MAX or "|" in line:
        return None
    name = " ".join(_plain(line).rstrip(":").split()).casefold()
    return _LABEL_OF.get(name.rstrip(":").strip())


def _fenced(lines: list[str], start: int) -> set[int]:
    """Lines inside a closed ````` fence (an unclosed one fences nothing)."""
    marks = [i for i in range(start, len(lines)) if lines[i].lstrip().startswith("```")]
    inside: set[int] = set()
    for a, b in zip(marks[::2], marks[1::2], strict=False):
        inside.update(range(a + 1, b))
    return inside


def _sections(lines: list[str], start: int) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Body lines of each labelled section (the first of a label counts) and the inline
    values (``Training data url: ...``)."""
    fenced = _fenced(lines, start)
    sections: dict[str, list[str]] = {}
    inline: dict[str, str] = {}
    current: list[str] | None = None
    for i in range(start, len(lines)):
        line = lines[i]
        label = None if i in fenced else _label(line)
        if label is not None:
            if label in sections:
                current = None  # a repeated label: keep the first section only
            else:
                current = sections[label] = []
            continue
        if i not in fenced and len(line) <= 4 * _LABEL_LINE_MAX and ":" in line:
            name, _, value = _plain(line).partition(":")
            key = _INLINE.get(" ".join(name.split()).casefold())
            if key is not None:
                inline.setdefault(key, value.strip())
                continue
        if current is not None:
            current.append(line)
    return sections, inline


def _json_object(body: str, key: str, notes: list[str]) -> dict[str, Any]:
    """The first balanced ``{...}`` in ``body``, parsed; ``{}`` with a note when broken."""
    what = key.replace("_", " ")
    begin = body.find("{")
    if begin < 0:
        if NOT_PROVIDED not in body.casefold() and body.strip():
            notes.append(f"{what}: no JSON object found")
        return {}
    end = _balanced_end(body, begin)
    if end is None:
        notes.append(f"{what}: the JSON object is not closed (or nested over {MAX_JSON_DEPTH})")
        return {}
    try:
        value = json.loads(body[begin:end])
    except (ValueError, RecursionError) as err:
        notes.append(f"{what}: invalid JSON ({str(err).splitlines()[0][:120]})")
        return {}
    return value if isinstance(value, dict) else {}


def _balanced_end(text: str, begin: int) -> int | None:
    """End (exclusive) of the JSON value opened at ``begin``; ``None`` if never closed."""
    depth = 0
    in_string = False
    skip = -1
    for m in _JSON_TOKEN.finditer(text, begin):
        pos = m.start()
        if pos <= skip:
            continue
        ch = m.group()
        if in_string:
            if ch == "\\":
                skip = pos + 1
            elif ch == '"':
                in_string = False
            continue
        if ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return None
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return pos + 1
    return None


# ------------------------------------------------------------------------------ tables
def _row_cells(line: str) -> list[str]:
    s = line.strip()
    s = s.removeprefix("|").removesuffix("|")
    return [c.strip() for c in s.split("|", MAX_TABLE_COLUMNS + 1)]


def _is_separator(cells: list[str]) -> bool:
    return bool(cells) and all(c and set(c) <= set("-: ") and "-" in c for c in cells)


def _tables(body: list[str]) -> Iterator[tuple[str | None, list[str], list[list[str]], int]]:
    """``(modality, header, rows, line)`` of each pipe table in ``body``; ``modality`` is
    that of the last ``Modality: x`` line before it."""
    modality: str | None = None
    i = 0
    while i < len(body):
        line = body[i]
        if "|" not in line:
            plain = _plain(line)
            name, sep, value = plain.partition(":")
            if sep and name.strip().casefold() == "modality" and value.strip():
                modality = value.strip().split()[0].casefold()
            i += 1
            continue
        start = i
        while i < len(body) and "|" in body[i]:
            i += 1
        block = [_row_cells(x) for x in body[start:i]]
        if len(block) >= 2 and _is_separator(block[1]):
            header, rows = block[0], block[2:]
        else:
            header, rows = [], [r for r in block if not _is_separator(r)]
        yield modality, header, rows, start


def _first_table(
    body: list[str] | None, notes: list[str], what: str
) -> tuple[list[str], list[list[str]]] | None:
    if body is None:
        return None
    for _, header, rows, _ in _tables(body):
        return header, _capped(rows, notes, what)
    return None


def _capped(rows: list[list[str]], notes: list[str], what: str) -> list[list[str]]:
    if len(rows) > MAX_TABLE_ROWS:
        notes.append(f"{what}: table of {len(rows):,} rows cut to {MAX_TABLE_ROWS:,}")
        rows = rows[:MAX_TABLE_ROWS]
    return rows


_HEADER_WORDS = {"summary stat key", "registry key", "key"}


def _pairs(table: tuple[list[str], list[list[str]]]) -> Iterator[tuple[str, str]]:
    """Key and value of each row of a two-column table (a header row without a separator
    line, as in flattened text, is skipped)."""
    header, rows = table
    for n, row in enumerate(rows):
        if len(row) < 2 or not row[0]:
            continue
        if n == 0 and not header and row[0].casefold() in _HEADER_WORDS:
            continue
        yield row[0], row[1]


def _metric_tables(body: list[str], key: str, notes: list[str]) -> dict[str, pd.DataFrame]:
    """Each table of a metric section by modality (``rna`` when none is named)."""
    out: dict[str, pd.DataFrame] = {}
    what = key.replace("_", " ")
    for modality, header, rows, _ in _tables(body):
        mod = modality or "rna"
        if mod in out:
            notes.append(f"{what}: a second table for modality {mod!r} ignored")
            continue
        if len(header) > MAX_TABLE_COLUMNS:
            notes.append(f"{what}: table with over {MAX_TABLE_COLUMNS} columns ignored")
            continue
        if not header and rows:
            header, rows = rows[0], rows[1:]
        if len(header) < 2:
            continue
        out[mod] = _frame(header, _capped(rows, notes, what))
    return out


def _frame(header: list[str], rows: list[list[str]]) -> pd.DataFrame:
    """Rows indexed by their first cell; a column of numbers (or missing marks) as float."""
    width = len(header)
    cells = [(r + [""] * width)[:width] for r in rows]
    index = pd.Index([r[0] for r in cells], name=header[0] or None)
    data: dict[str, Any] = {}
    for j, name in enumerate(header[1:], start=1):
        values = [r[j] for r in cells]
        numbers = [_number(v) for v in values]
        if all(x is not None for x in numbers):
            data[name] = np.asarray(numbers, dtype=np.float64)
        else:
            data[name] = values
    return pd.DataFrame(data, index=index, columns=list(data))


def _number(value: str) -> float | None:
    """A cell as float (NaN for a missing mark), ``None`` when it is text."""
    s = value.strip()
    if s.casefold() in _MISSING:
        return math.nan
    try:
        return float(s.replace(",", ""))
    except ValueError:
        return None


def _scalar(value: str) -> int | float | str:
    s = value.strip()
    try:
        return int(s)
    except ValueError:
        pass
    try:
        return float(s)
    except ValueError:
        return s


def _boolean(value: str) -> bool | None:
    return {"true": True, "false": False}.get(value.strip().casefold())


def _url(value: str | None) -> str | None:
    if value is None:
        return None
    s = value.strip()
    return None if not s or s.casefold().startswith(NOT_PROVIDED) else s


def _str_or_none(value: Any) -> str | None:
    if value is None or isinstance(value, (Mapping, list)):
        return None
    return str(value)
