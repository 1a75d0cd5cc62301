"""The colour key of a gene set: ``set:<name>=gene:CD3E,gene:CD8A,protein:CD8a_TotalSeqB``.

A gene set colours the cells like any feature (:mod:`dashboard.views.colours`); its key
carries its name and members, so the colour store, a shared link and the dropdown hold
everything needed and no callback needs another store. Keys come from the browser: every
read decodes them again (:func:`decode_set`: syntax and bounds) and checks each member
against the pair's features (:func:`known_set`), refusing a forged one in one line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dashboard.backend.errors import InvalidSelection
from dashboard.backend.gene_sets import MAX_FEATURES

if TYPE_CHECKING:
    from dashboard.views.features import FeatureCatalog

#: The feature kind of a gene set (``"set:<name>=<members>"``).
SET_KIND = "set"
#: Longest set name, and the characters it may have (no ``=`` or ``,``: they delimit).
MAX_NAME = 40
_NAME = re.compile(r"[\w .+\-()/#]+")
#: Longest member name (a gene or protein name as the dataset has it).
MAX_MEMBER = 64
#: Longest key (name and members); about 500 members of 20 characters.
MAX_KEY = 12_000
_MEMBER_KINDS = ("gene", "protein")


@dataclass(frozen=True)
class GeneSet:
    """A named set of the pair's genes and proteins (each sorted, distinct)."""

    name: str
    genes: tuple[str, ...]
    proteins: tuple[str, ...]

    @property
    def members(self) -> list[str]:
        """``["gene:CD3E", ..., "protein:CD3_TotalSeqB", ...]``."""
        return [f"gene:{g}" for g in self.genes] + [f"protein:{p}" for p in self.proteins]

    @property
    def key(self) -> str:
        """The colour key (:func:`set_key`)."""
        return f"{SET_KIND}:{self.name}={','.join(self.members)}"

    @property
    def size(self) -> int:
        """Number of members."""
        return len(self.genes) + len(self.proteins)


def check_name(name: object) -> str:
    """A set name stripped and checked (1 to :data:`MAX_NAME` letters, digits, spaces and
    ``_ . + - ( ) / #``); else one line saying what is wrong."""
    text = str(name or "").strip() if isinstance(name, str | None) else ""
    if not text:
        msg = "give the gene set a name"
        raise InvalidSelection(msg)
    if len(text) > MAX_NAME:
        msg = f"a gene set's name has at most {MAX_NAME} characters"
        raise InvalidSelection(msg)
    if not _NAME.fullmatch(text):
        msg = (
            f"the gene set's name {text[:MAX_NAME]!r} may have letters, digits, spaces and "
            "_ . + - ( ) / # only"
        )
        raise InvalidSelection(msg)
    return text


def make_set(
    name: str, genes: list[str] | tuple[str, ...], proteins: list[str] | tuple[str, ...]
) -> GeneSet:
    """A :class:`GeneSet` (name checked; members sorted and made distinct, bounded)."""
    gs = GeneSet(check_name(name), tuple(sorted(set(genes))), tuple(sorted(set(proteins))))
    if gs.size == 0:
        msg = "the gene set is empty: give at least one gene or protein"
        raise InvalidSelection(msg)
    if gs.size > MAX_FEATURES:
        msg = f"a gene set has at most {MAX_FEATURES} genes and proteins; this one has {gs.size}"
        raise InvalidSelection(msg)
    for member in gs.members:
        name_part = member.split(":", 1)[1]
        if not name_part or len(name_part) > MAX_MEMBER or "," in name_part:
            msg = f"{member[:MAX_MEMBER]!r} cannot be a gene set member"
            raise InvalidSelection(msg)
    return gs


def is_set_key(value: object) -> bool:
    """True if ``value`` is a string of the gene-set kind (not that it is valid)."""
    return isinstance(value, str) and value.startswith(f"{SET_KIND}:")


def decode_set(key: object) -> GeneSet:
    """The :class:`GeneSet` a colour key names (syntax and bounds checked, not the
    members' existence: :func:`known_set`); a malformed key raises one line."""
    if not is_set_key(key):
        msg = "not a gene set"
        raise InvalidSelection(msg)
    text = str(key)
    if len(text) > MAX_KEY:
        msg = f"the gene set key is too long ({len(text):,} characters; at most {MAX_KEY:,})"
        raise InvalidSelection(msg)
    name, sep, body = text[len(SET_KIND) + 1 :].partition("=")
    if not sep or not body:
        msg = "a damaged gene set key (no members)"
        raise InvalidSelection(msg)
    genes, proteins = [], []
    for member in body.split(","):
        kind, colon, member_name = member.partition(":")
        if not colon or kind not in _MEMBER_KINDS:
            msg = f"a damaged gene set key (member {member[:MAX_MEMBER]!r})"
            raise InvalidSelection(msg)
        (genes if kind == "gene" else proteins).append(member_name)
    return make_set(name, genes, proteins)


def known_set(key: object, catalog: FeatureCatalog) -> GeneSet:
    """:func:`decode_set`, and every member a gene or protein of ``catalog``'s pair (one
    line naming those it lacks)."""
    gs = decode_set(key)
    genes, proteins = set(catalog.genes), set(catalog.proteins)
    missing = [g for g in gs.genes if g not in genes]
    missing += [p for p in gs.proteins if p not in proteins]
    if missing:
        shown = ", ".join(m[:MAX_MEMBER] for m in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        msg = f"the gene set {gs.name!r} names features this dataset lacks: {shown}{more}"
        raise InvalidSelection(msg)
    return gs


def set_known(key: str, catalog: FeatureCatalog) -> bool:
    """True if ``key`` is a valid gene set of ``catalog``'s pair."""
    try:
        known_set(key, catalog)
    except InvalidSelection:
        return False
    return True


def set_label(key: str) -> str:
    """The dropdown label and colour-bar title start of a set key: ``"Gene set: T cells"``
    (``"Gene set"`` for a damaged key)."""
    try:
        return f"Gene set: {decode_set(key).name}"
    except InvalidSelection:
        return "Gene set"
