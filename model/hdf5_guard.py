"""Refuse untrusted HDF5 files (``.h5ad``, ``.h5mu``, Cell Ranger ``.h5``) before reading them.

:func:`check_hdf5_file` walks every link of the file with h5py's low-level API, following
hard links only, and raises :class:`~model.errors.CiteSeqDataError` with one line naming the
object when the file

* is not self-contained: an external link, a dataset with external raw storage or a
  virtual dataset (each makes a reader open another file), or a user-defined link type;
* links a group twice (a hard-link loop, which readers would follow forever), or
  has a soft link that dangles or loops (resolved only after the whole file was walked,
  so never through an external link);
* needs a filter that is not built in (a plugin could be loaded from ``HDF5_PLUGIN_PATH``);
  allowed: gzip, lzf, szip, shuffle, fletcher32, scaleoffset, nbit;
* declares far more data than it stores (unwritten chunks read as fill values, so a small
  file could make the reader allocate gigabytes): above :data:`SIZE_FLOOR`, a dataset
  must store all its chunks and at least 1/:data:`MAX_EXPANSION` of its declared size, and
  neither one dataset nor all of them together may declare more than :data:`MAX_EXPANSION`
  times the file's size. 2000 is twice deflate's best ratio (about 1032:1), so ordinary
  compressed data passes;
* holds an AnnData sparse matrix (``encoding-type`` ``csr_matrix``/``csc_matrix``, or the
  old ``h5sparse_format``) whose ``indptr``/``indices`` are inconsistent
  (:func:`model.sparse_check.check_compressed`).

Nothing but link information, creation properties, attributes and the arrays of sparse
matrices is read.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from model.errors import CiteSeqDataError
from model.sparse_check import check_compressed, check_data

__all__ = ["ALLOWED_FILTERS", "MAX_EXPANSION", "SIZE_FLOOR", "check_hdf5_file"]

#: Declared sizes up to this many bytes are never refused for being unallocated.
SIZE_FLOOR = 64 * 1024**2
#: Most declared bytes per stored byte (and per byte of the file).
MAX_EXPANSION = 2000
#: Most links a file may have (anndata files have hundreds to a few thousand).
MAX_LINKS = 1_000_000
#: HDF5 filters built into libhdf5 or h5py, by filter id.
ALLOWED_FILTERS = {
    1: "gzip",
    2: "shuffle",
    3: "fletcher32",
    4: "szip",
    5: "nbit",
    6: "scaleoffset",
    32000: "lzf",
}
_SPARSE_ENCODINGS = {"csr_matrix": "csr", "csc_matrix": "csc", "csr": "csr", "csc": "csc"}
_SELF_CONTAINED = "refused (files must be self-contained)"


@dataclass
class _Walk:
    """What the walk collected: soft links to resolve, sparse groups, sizes."""

    where: str
    file_size: int
    soft: list[tuple[str, bytes, h5py.h5g.GroupID]] = field(default_factory=list)
    refs: list[tuple[str, object]] = field(default_factory=list)
    sparse: list[tuple[str, str, h5py.h5g.GroupID]] = field(default_factory=list)
    seen: dict[int, str] = field(default_factory=dict)
    checked: dict[int, int] = field(default_factory=dict)
    total: int = 0
    root: int = -1
    largest: tuple[int, str] = (0, "")
    links: int = 0


def check_hdf5_file(path: str | os.PathLike[str], *, source: str = "") -> None:
    """Raise :class:`CiteSeqDataError` (one line) if the HDF5 file at ``path`` is unsafe.

    ``source`` names the file in messages (default: ``path``). A file h5py cannot open
    passes: the reader then reports it as unreadable.
    """
    p = Path(path)
    where = source or str(p)
    try:
        f = h5py.File(p, "r")
    except OSError:
        return
    with f:
        try:
            _check_open_file(f, p, where)
        except CiteSeqDataError:
            raise
        except (KeyError, RuntimeError, OSError, TypeError, ValueError) as err:
            msg = f"{where}: unreadable HDF5 structure ({type(err).__name__}); refused"
            raise CiteSeqDataError(msg) from None


def _check_open_file(f: h5py.File, p: Path, where: str) -> None:
    """The checks of :func:`check_hdf5_file` on the open file ``f``."""
    walk = _Walk(where=where, file_size=max(p.stat().st_size, 1))
    walk.root = h5py.h5o.get_info(f["/"].id).addr
    _collect_refs(f["/"].id, "/", walk)
    _walk_links(f["/"].id, "", walk)
    for name, target, group in walk.soft:
        _resolve_soft(f, group, name, target, walk)
    for name, ref in walk.refs:
        _check_reference(f, name, ref, walk)
    limit = max(SIZE_FLOOR, MAX_EXPANSION * walk.file_size)
    if walk.total > limit:
        msg = (
            f"{where}: its datasets declare {_size(walk.total)} in all (largest: "
            f"{walk.largest[1]}, {_size(walk.largest[0])}) in a file of "
            f"{_size(walk.file_size)}; refused (more than {MAX_EXPANSION}x the file's size)"
        )
        raise CiteSeqDataError(msg)
    for name, fmt, gid in walk.sparse:
        _check_sparse_group(h5py.Group(gid), name, fmt, where)


def _walk_links(gid: h5py.h5g.GroupID, prefix: str, walk: _Walk) -> None:
    """Check every link under ``gid`` (depth-first over hard links, each group once)."""
    stack = [(gid, prefix)]
    while stack:
        group, base = stack.pop()
        for raw in group:
            walk.links += 1
            if walk.links > MAX_LINKS:
                msg = f"{walk.where}: more than {MAX_LINKS:,} HDF5 links; refused"
                raise CiteSeqDataError(msg)
            name = f"{base}{_text(raw)}"
            kind = group.links.get_info(raw).type
            if kind == h5py.h5l.TYPE_EXTERNAL:
                msg = f"{walk.where}: {name} is an HDF5 external link to another file; "
                raise CiteSeqDataError(msg + _SELF_CONTAINED)
            if kind == h5py.h5l.TYPE_SOFT:
                walk.soft.append((name, group.links.get_val(raw), group))
                continue
            if kind != h5py.h5l.TYPE_HARD:
                msg = f"{walk.where}: {name} is a user-defined HDF5 link (type {kind}); "
                raise CiteSeqDataError(msg + _SELF_CONTAINED)
            oid = h5py.h5o.open(group, raw)
            addr = h5py.h5o.get_info(oid).addr
            if isinstance(oid, h5py.h5g.GroupID):
                if addr in walk.seen or addr == walk.root:
                    first = walk.seen.get(addr, "/")
                    msg = (
                        f"{walk.where}: {name} is a second hard link to group {first} (a loop "
                        "or a shared group, which readers would read forever or twice); refused"
                    )
                    raise CiteSeqDataError(msg)
                walk.seen[addr] = name
                _collect_refs(oid, name, walk)
                fmt = _sparse_format(oid)
                if fmt is not None:
                    walk.sparse.append((name, fmt, oid))
                stack.append((oid, f"{name}/"))
            elif isinstance(oid, h5py.h5d.DatasetID):
                if addr not in walk.checked:
                    walk.checked[addr] = _check_dataset(oid, name, walk)
                    _collect_refs(oid, name, walk)
                declared = walk.checked[addr]
                walk.total += declared
                walk.largest = max(walk.largest, (declared, name))


def _check_dataset(dsid: h5py.h5d.DatasetID, name: str, walk: _Walk) -> int:
    """Refuse a virtual, externally stored, plugin-filtered or hollow dataset; its bytes."""
    where = walk.where
    dcpl = dsid.get_create_plist()
    layout = dcpl.get_layout()
    if layout == h5py.h5d.VIRTUAL:
        msg = f"{where}: {name} is an HDF5 virtual dataset (it maps data of other files); "
        raise CiteSeqDataError(msg + _SELF_CONTAINED)
    if dcpl.get_external_count():
        msg = f"{where}: {name} keeps its data in external raw files; "
        raise CiteSeqDataError(msg + _SELF_CONTAINED)
    for i in range(dcpl.get_nfilters()):
        code, _flags, _values, fname = dcpl.get_filter(i)
        if code not in ALLOWED_FILTERS:
            label = _text(fname) or "unnamed"
            msg = (
                f"{where}: {name} needs HDF5 filter {code} ({label}), which is not built in; "
                f"refused (allowed: {', '.join(sorted(ALLOWED_FILTERS.values()))})"
            )
            raise CiteSeqDataError(msg)
    space = dsid.get_space()
    declared = int(space.get_simple_extent_npoints()) * int(dsid.get_type().get_size())
    if declared <= SIZE_FLOOR:
        return declared
    stored = int(dsid.get_storage_size())
    sizes = f"declares {_size(declared)} but stores {_size(stored)}"
    if layout == h5py.h5d.CHUNKED:
        dims = space.get_simple_extent_dims()
        chunk = dcpl.get_chunk()
        expected = math.prod(math.ceil(d / c) for d, c in zip(dims, chunk, strict=True))
        have = int(dsid.get_num_chunks())
        if have < expected:
            msg = (
                f"{where}: {name} {sizes} ({have:,} of its {expected:,} chunks); refused "
                "(unwritten chunks would be read as fill values)"
            )
            raise CiteSeqDataError(msg)
    if stored == 0 or declared > MAX_EXPANSION * stored:
        msg = f"{where}: {name} {sizes}; refused (more than {MAX_EXPANSION}x expansion)"
        raise CiteSeqDataError(msg)
    if declared > MAX_EXPANSION * walk.file_size:
        msg = (
            f"{where}: {name} declares {_size(declared)} in a file of "
            f"{_size(walk.file_size)}; refused (more than {MAX_EXPANSION}x the file's size)"
        )
        raise CiteSeqDataError(msg)
    return declared


def _resolve_soft(
    f: h5py.File, group: h5py.h5g.GroupID, name: str, target: bytes, walk: _Walk
) -> None:
    """Refuse a soft link that dangles or loops (HDF5 stops after 16 hops) or that names a
    group (a second way into it, as a second hard link would be); a link to a dataset
    counts that dataset's declared bytes once more (a reader reads it once per name)."""
    start = f.id if target.startswith(b"/") else group  # relative links start at their group
    try:
        oid = h5py.h5o.open(start, target)
    except (KeyError, OSError, RuntimeError, ValueError):
        msg = (
            f"{walk.where}: {name} is an HDF5 soft link to {_text(target)!r}, which dangles "
            "or loops; refused"
        )
        raise CiteSeqDataError(msg) from None
    if isinstance(oid, h5py.h5g.GroupID):
        msg = (
            f"{walk.where}: {name} is an HDF5 soft link to group {_text(target)!r} (a second "
            "way into it, which readers would read twice); refused"
        )
        raise CiteSeqDataError(msg)
    if isinstance(oid, h5py.h5d.DatasetID):
        addr = h5py.h5o.get_info(oid).addr
        if addr not in walk.checked:
            walk.checked[addr] = _check_dataset(oid, name, walk)
        walk.total += walk.checked[addr]
        walk.largest = max(walk.largest, (walk.checked[addr], name))


def _has_reference(dtype: np.dtype) -> bool:
    """Whether values of ``dtype`` hold HDF5 object or region references."""
    if h5py.check_dtype(ref=dtype) is not None:
        return True
    if dtype.fields:
        return any(_has_reference(sub) for sub, *_ in dtype.fields.values())
    return dtype.subdtype is not None and _has_reference(dtype.subdtype[0])


def _collect_refs(oid: h5py.h5o.ObjectID, name: str, walk: _Walk) -> None:
    """Keep the references in ``oid``'s attributes (checked after the walk); refuse a
    dataset of references (no CITE-seq format stores one; its targets could be anything)."""
    if isinstance(oid, h5py.h5d.DatasetID) and _has_reference(oid.dtype):
        msg = f"{walk.where}: {name} is a dataset of HDF5 references; refused"
        raise CiteSeqDataError(msg)
    obj = h5py.Group(oid) if isinstance(oid, h5py.h5g.GroupID) else h5py.Dataset(oid)
    attrs = obj.attrs
    for key in attrs:
        aid = h5py.h5a.open(oid, key.encode() if isinstance(key, str) else key)
        if _has_reference(aid.dtype):
            walk.refs.append((f"{name} attribute {_text(key)!r}", attrs[key]))


def _references(value: object) -> Iterator[h5py.Reference]:
    """The (object or region) references in an attribute's value, compound fields too."""
    if isinstance(value, h5py.Reference):
        yield value
        return
    arr = np.asarray(value)
    for key in arr.dtype.names or ():
        yield from _references(arr[key])
    if not arr.dtype.names:
        yield from (v for v in arr.ravel() if isinstance(v, h5py.Reference))


def _check_reference(f: h5py.File, name: str, value: object, walk: _Walk) -> None:
    """Refuse references to objects the walk did not check (an object kept alive only by a
    reference is outside the file's tree: its storage could be anything, e.g. external)."""
    known = {walk.root, *walk.seen, *walk.checked}
    for ref in _references(value):
        if not ref:  # a null reference points nowhere and reads as nothing
            continue
        try:
            addr = h5py.h5o.get_info(h5py.h5r.dereference(ref, f.id)).addr
        except (KeyError, OSError, RuntimeError, ValueError, TypeError):
            addr = None
        if addr not in known:
            msg = (
                f"{walk.where}: {name} refers to an HDF5 object outside the file's tree (or "
                "to nothing); refused"
            )
            raise CiteSeqDataError(msg)


def _sparse_format(gid: h5py.h5g.GroupID) -> str | None:
    """``"csr"``/``"csc"`` for an AnnData sparse-matrix group, else ``None``."""
    attrs = h5py.Group(gid).attrs
    for key in ("encoding-type", "h5sparse_format"):
        if key in attrs:
            value = attrs[key]
            value = _text(value) if isinstance(value, bytes | str) else ""
            return _SPARSE_ENCODINGS.get(value)
    return None


def _check_sparse_group(group: h5py.Group, name: str, fmt: str, where: str) -> None:
    """Check an AnnData sparse group's arrays and ``shape`` attribute."""
    members = {}
    for key in ("data", "indices", "indptr"):
        obj = group.get(key)
        if not isinstance(obj, h5py.Dataset):
            msg = f"{where}: {name}: {fmt.upper()} matrix has no {key!r} dataset; refused"
            raise CiteSeqDataError(msg)
        members[key] = obj
    shape = group.attrs.get("shape", group.attrs.get("h5sparse_shape"))
    if shape is None:
        msg = f"{where}: {name}: {fmt.upper()} matrix has no 'shape' attribute; refused"
        raise CiteSeqDataError(msg)
    data = members["data"]
    check_data(data, 1, where, name, fmt)
    check_compressed(
        members["indptr"],
        members["indices"],
        data_len=data.shape[0],
        shape=np.asarray(shape),
        fmt=fmt,
        where=where,
        field=name,
    )


def _text(raw: bytes | str) -> str:
    """A link name or value as printable one-line text."""
    s = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return "".join(c if c.isprintable() else "?" for c in s)


def _size(n: int) -> str:
    """Bytes as text: ``"1.4 MB"`` (MB = 1024**2 bytes)."""
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2), ("kB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"
