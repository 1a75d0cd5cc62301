"""The bytes of a file a ``dcc.Upload`` sent (``data:<type>;base64,<data>``), bounded and
checked, for the cards that read small files in a callback (gene lists, label-set CSVs);
datasets and checkpoints stream through the upload route instead."""

from __future__ import annotations

import base64
import binascii

from dashboard.backend.errors import InvalidSelection


def upload_bytes(contents: object, *, what: str, max_bytes: int, too_large: str) -> bytes:
    """The decoded bytes of an upload named ``what`` in messages; refused in one line when
    it is not an upload, is damaged or is over ``max_bytes`` (``too_large`` says why, e.g.
    ``"too large for a gene list (at most 256 kB)"``) — the size checked before decoding."""
    if not isinstance(contents, str) or "," not in contents:
        msg = f"{what} could not be read (not an upload)"
        raise InvalidSelection(msg)
    head, data = contents.split(",", 1)
    if not head.startswith("data:") or ";base64" not in head:
        msg = f"{what} could not be read (not an upload)"
        raise InvalidSelection(msg)
    if len(data) > (max_bytes * 4) // 3 + 8:
        msg = f"{what} is {too_large}"
        raise InvalidSelection(msg)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        msg = f"{what} could not be read (damaged upload)"
        raise InvalidSelection(msg) from None
    if len(raw) > max_bytes:
        msg = f"{what} is {too_large}"
        raise InvalidSelection(msg)
    return raw
