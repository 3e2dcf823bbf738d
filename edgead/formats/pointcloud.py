"""Point-cloud files: read PCD, PLY, NPY/NPZ and TXT; write PCD and PLY.

Every reader returns points as an ``(N, 3)`` float32 array in the file's units. Rows of organised clouds that the
sensor could not measure stay in the array as NaN: callers decide what to drop (:mod:`edgead.formats.dataset` drops
them, :class:`~edgead.runtime.EdgeDetector` reports them as ``n_dropped``).

Anything wrong with a file (missing, truncated, bad header, unknown type, no x/y/z, ...) raises
:class:`PointCloudError`, a ``ValueError`` whose message starts with the file's path and names the problem.

Supported formats, chosen by extension:

* ``.pcd``: DATA ``ascii``, ``binary`` and ``binary_compressed`` (LZF, column-major as PCL writes it); any field set
  (``rgb``, ``normal_x``, ``label``, padding ``_`` fields, ...) with any SIZE/TYPE/COUNT; organised
  ``WIDTH x HEIGHT`` clouds come back as ``WIDTH * HEIGHT`` rows in row-major order.
* ``.ply``: ``ascii``, ``binary_little_endian`` and ``binary_big_endian``; the ``vertex`` element with any extra
  properties; other elements (faces, edges) are skipped.
* ``.npy`` (an ``(N, >=3)`` array; a ``(3, N)`` or ``(4, N)`` one is refused as transposed) and ``.npz`` (the
  ``points`` array, else the first one).
* ``.txt``, ``.xyz``, ``.csv``: one point per line, ``x y z [label]``, separated by spaces or commas; ``#`` starts
  a comment.

Labels (:func:`read_labeled`) come from a PCD ``label`` field, a PLY ``label`` vertex property, an NPZ ``labels``
array, or the fourth column of a 4-column TXT/NPY; they are returned as ``(N,)`` uint8, 1 where the stored value is
non-zero.
"""

from __future__ import annotations

import io
import struct
import warnings
import zipfile
from pathlib import Path

import lzf
import numpy as np

__all__ = ["PointCloudError", "read_points", "read_labeled", "write_pcd", "write_ply", "SUFFIXES"]

SUFFIXES = (".pcd", ".ply", ".npy", ".npz", ".txt", ".xyz", ".csv")

# LZF cannot expand data by more than this factor; a larger claim in a header is corruption, not data.
_LZF_MAX_RATIO = 120
_MAX_HEADER_BYTES = 1 << 16


class PointCloudError(ValueError):
    """A point-cloud file could not be read or written. The message names the file and the problem."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


# ----------------------------------------------------------------------------------------------------- public API


def read_points(path) -> np.ndarray:
    """Read a point cloud. Returns ``(N, 3)`` float32; unmeasured rows of organised clouds are NaN."""
    return read_labeled(path)[0]


def read_labeled(path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a point cloud and its per-point labels when the format carries them.

    Returns ``(points (N, 3) float32, labels (N,) uint8 or None)``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    readers = {".pcd": _read_pcd, ".ply": _read_ply, ".npy": _read_npy, ".npz": _read_npz,
               ".txt": _read_txt, ".xyz": _read_txt, ".csv": _read_txt}
    if suffix not in readers:
        raise PointCloudError(path, f"unsupported point-cloud format {suffix or '(no extension)'!r}; "
                                    f"expected one of {', '.join(SUFFIXES)}")
    try:
        if not path.is_file():
            raise PointCloudError(path, "no such file" if not path.exists() else "not a regular file")
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. loadtxt on a file of comments only
            points, labels = readers[suffix](path)
    except PointCloudError:
        raise
    except MemoryError as exc:  # a header asking for absurd sizes that slipped past the checks
        raise PointCloudError(path, "file claims more data than can be held in memory") from exc
    except (OSError, ValueError, TypeError, IndexError, KeyError, OverflowError, struct.error, EOFError,
            zipfile.BadZipFile, UnicodeDecodeError, SyntaxError) as exc:
        raise PointCloudError(path, f"malformed {suffix[1:].upper()} file ({type(exc).__name__}: {exc})") from exc
    except Exception as exc:  # a reader meets arbitrary bytes: whatever a library raises, say which file it was
        raise PointCloudError(path, f"unreadable {suffix[1:].upper()} file ({type(exc).__name__}: {exc})") from exc
    return _finish(path, points, labels)


def write_pcd(path, points, fmt: str = "binary", labels=None) -> None:
    """Write ``(N, 3)`` points (float32) as PCD v0.7, DATA ``binary`` | ``ascii`` | ``binary_compressed``.

    With ``labels`` ((N,) integers) a ``label`` field (U 4) is added. The output is a pure function of the
    arguments (same bytes every time).
    """
    path = Path(path)
    pts = _check_points_arg(path, points)
    lab = _check_labels_arg(path, labels, len(pts))
    if fmt not in ("ascii", "binary", "binary_compressed"):
        raise PointCloudError(path, f"unknown PCD data format {fmt!r}; expected ascii, binary or binary_compressed")
    fields = ["x", "y", "z"] + (["label"] if lab is not None else [])
    n = len(pts)
    header = (
        "# .PCD v0.7 - Point Cloud Data file format\n"
        "VERSION 0.7\n"
        f"FIELDS {' '.join(fields)}\n"
        f"SIZE {' '.join(['4'] * len(fields))}\n"
        f"TYPE {' '.join(['F', 'F', 'F'] + (['U'] if lab is not None else []))}\n"
        f"COUNT {' '.join(['1'] * len(fields))}\n"
        f"WIDTH {n}\n"
        "HEIGHT 1\n"
        "VIEWPOINT 0 0 0 1 0 0 0\n"
        f"POINTS {n}\n"
        f"DATA {fmt}\n"
    ).encode("ascii")
    rec = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4")] + ([("label", "<u4")] if lab is not None else []))
    arr = np.empty(n, dtype=rec)
    arr["x"], arr["y"], arr["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    if lab is not None:
        arr["label"] = lab
    if fmt == "ascii":
        body = _ascii_rows(pts, lab)
    elif fmt == "binary":
        body = arr.tobytes()
    else:
        raw = b"".join(np.ascontiguousarray(arr[name]).tobytes() for name in fields)  # column-major, as PCL
        packed = lzf.compress(raw, len(raw) + len(raw) // 16 + 64) if raw else b""
        if packed is None:  # pragma: no cover - the bound above always holds for LZF
            raise PointCloudError(path, "LZF compression failed")
        body = struct.pack("<II", len(packed), len(raw)) + packed
    _write_bytes(path, header + body)


def write_ply(path, points, binary: bool = True, labels=None) -> None:
    """Write ``(N, 3)`` points (float32) as a PLY vertex list, ``binary_little_endian`` or ``ascii``.

    With ``labels`` ((N,) integers) a ``uint label`` vertex property is added.
    """
    path = Path(path)
    pts = _check_points_arg(path, points)
    lab = _check_labels_arg(path, labels, len(pts))
    fmt = "binary_little_endian" if binary else "ascii"
    header = (f"ply\nformat {fmt} 1.0\ncomment written by edgead\nelement vertex {len(pts)}\n"
              "property float x\nproperty float y\nproperty float z\n"
              + ("property uint label\n" if lab is not None else "") + "end_header\n").encode("ascii")
    if binary:
        rec = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4")] + ([("label", "<u4")] if lab is not None else []))
        arr = np.empty(len(pts), dtype=rec)
        arr["x"], arr["y"], arr["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
        if lab is not None:
            arr["label"] = lab
        body = arr.tobytes()
    else:
        body = _ascii_rows(pts, lab)
    _write_bytes(path, header + body)


# ------------------------------------------------------------------------------------------------------- helpers


def _check_points_arg(path, points) -> np.ndarray:
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise PointCloudError(path, f"points to write must have shape (N, 3), got {pts.shape}")
    if pts.dtype.kind not in "fiu":
        raise PointCloudError(path, f"points to write must be numeric, got dtype {pts.dtype}")
    return np.ascontiguousarray(pts, dtype=np.float32)


def _check_labels_arg(path, labels, n: int) -> np.ndarray | None:
    if labels is None:
        return None
    lab = np.asarray(labels)
    if lab.shape != (n,):
        raise PointCloudError(path, f"labels to write must have shape ({n},), got {lab.shape}")
    if lab.dtype.kind == "b":
        lab = lab.astype(np.uint32)
    if lab.dtype.kind == "f" and not (np.isfinite(lab).all() and (lab == np.round(lab)).all()):
        raise PointCloudError(path, "labels to write must be integers")
    if lab.dtype.kind not in "fiu" or (lab.size and (lab.min() < 0 or lab.max() > 0xFFFFFFFF)):
        raise PointCloudError(path, "labels to write must be integers in [0, 2**32)")
    return lab.astype(np.uint32)


def _ascii_rows(pts: np.ndarray, lab: np.ndarray | None) -> bytes:
    """Text rows that read back bit-exactly as float32 (9 significant digits; NaN as ``nan``)."""
    if len(pts) == 0:
        return b""
    cols = [np.char.mod("%.9g", pts[:, i].astype(np.float64)) for i in range(3)]
    if lab is not None:
        cols.append(lab.astype(np.int64).astype(str))
    rows = cols[0]
    for c in cols[1:]:
        rows = np.char.add(np.char.add(rows, " "), c)
    return ("\n".join(rows.tolist()) + "\n").encode("ascii")


def _write_bytes(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as exc:
        raise PointCloudError(path, f"cannot write ({exc.strerror or exc})") from exc


def _finish(path, points, labels) -> tuple[np.ndarray, np.ndarray | None]:
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise PointCloudError(path, f"expected points of shape (N, 3), got {pts.shape}")
    pts = np.ascontiguousarray(pts, dtype=np.float32)
    if labels is not None:
        lab = np.asarray(labels)
        if lab.shape != (len(pts),):
            raise PointCloudError(path, f"{lab.size} labels for {len(pts)} points")
        if lab.dtype.kind == "f":
            if not np.isfinite(lab).all():
                raise PointCloudError(path, "labels contain NaN or infinity")
        labels = (lab != 0).astype(np.uint8)
    return pts, labels


def _xyz_from_columns(path, cols: dict[str, np.ndarray]) -> np.ndarray:
    missing = [c for c in "xyz" if c not in cols]
    if missing:
        raise PointCloudError(path, f"no {'/'.join(missing)} field (fields: {', '.join(cols) or 'none'})")
    return np.stack([np.asarray(cols[c], dtype=np.float64).reshape(-1) for c in "xyz"], axis=1)


# ----------------------------------------------------------------------------------------------------------- PCD

_PCD_TYPES = {("F", 4): "f4", ("F", 8): "f8", ("I", 1): "i1", ("I", 2): "i2", ("I", 4): "i4", ("I", 8): "i8",
              ("U", 1): "u1", ("U", 2): "u2", ("U", 4): "u4", ("U", 8): "u8"}
_PCD_KEYS = ("VERSION", "FIELDS", "SIZE", "TYPE", "COUNT", "WIDTH", "HEIGHT", "VIEWPOINT", "POINTS", "DATA")


def _read_header_lines(path, data: bytes, terminator) -> tuple[list[str], int]:
    """Split a text header off ``data``: (lines, offset of the body). ``terminator(line)`` ends the header."""
    lines, pos = [], 0
    while True:
        if pos >= len(data) or pos > _MAX_HEADER_BYTES:
            raise PointCloudError(path, "bad header: no end of header found")
        end = data.find(b"\n", pos)
        if end < 0:
            end = len(data)
        raw = data[pos:end]
        pos = end + 1
        try:
            line = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            raise PointCloudError(path, "bad header: non-ASCII bytes in the header") from None
        lines.append(line)
        if terminator(line):
            return lines, min(pos, len(data))


def _int_field(path, key: str, value: str, minimum: int = 0) -> int:
    try:
        v = int(value)
    except ValueError:
        raise PointCloudError(path, f"bad header: {key} {value!r} is not an integer") from None
    if v < minimum:
        raise PointCloudError(path, f"bad header: {key} {v} must be >= {minimum}")
    return v


def _read_pcd(path: Path):
    data = path.read_bytes()
    lines, body_at = _read_header_lines(path, data, lambda ln: ln.upper().startswith("DATA"))
    hdr: dict[str, list[str]] = {}
    for line in lines:
        if not line or line.startswith("#"):
            continue
        key, *vals = line.split()
        key = key.upper()
        if key not in _PCD_KEYS:
            raise PointCloudError(path, f"bad header: unknown PCD header line {line[:40]!r}")
        hdr[key] = vals
    for key in ("FIELDS", "DATA"):
        if key not in hdr or not hdr[key]:
            raise PointCloudError(path, f"bad header: no {key} line")
    fields = hdr["FIELDS"]
    nf = len(fields)
    sizes = hdr.get("SIZE", ["4"] * nf)
    types = hdr.get("TYPE", ["F"] * nf)
    counts = hdr.get("COUNT", ["1"] * nf)
    for key, vals in (("SIZE", sizes), ("TYPE", types), ("COUNT", counts)):
        if len(vals) != nf:
            raise PointCloudError(path, f"bad header: {len(vals)} {key} entries for {nf} FIELDS")
    width = _int_field(path, "WIDTH", hdr["WIDTH"][0]) if hdr.get("WIDTH") else None
    height = _int_field(path, "HEIGHT", hdr["HEIGHT"][0]) if hdr.get("HEIGHT") else 1
    if hdr.get("POINTS"):
        npts = _int_field(path, "POINTS", hdr["POINTS"][0])
    elif width is not None:
        npts = width * height
    else:
        raise PointCloudError(path, "bad header: neither POINTS nor WIDTH given")
    if width is not None and width * height != npts:
        raise PointCloudError(path, f"bad header: WIDTH x HEIGHT = {width} x {height} but POINTS {npts}")

    dtype_fields, names, seen = [], [], {}
    for i, (name, size, typ, count) in enumerate(zip(fields, sizes, types, counts, strict=True)):
        size_i = _int_field(path, "SIZE", size, 1)
        count_i = _int_field(path, "COUNT", count, 1)
        if count_i > 4096:
            raise PointCloudError(path, f"bad header: COUNT {count_i} of field {name!r} is implausible")
        key = (typ.upper(), size_i)
        if key not in _PCD_TYPES:
            raise PointCloudError(path, f"unknown type: field {name!r} has TYPE {typ} SIZE {size_i}")
        unique = name if name not in seen and name != "_" else f"_{i}_{name}"
        seen[name] = True
        names.append(unique)
        shape = () if count_i == 1 else (count_i,)
        dtype_fields.append((unique, "<" + _PCD_TYPES[key], shape))
    rec = np.dtype(dtype_fields)
    mode = hdr["DATA"][0].lower()
    body = memoryview(data)[body_at:]

    if mode == "ascii":
        arr = _pcd_ascii(path, bytes(body), rec, npts)
    elif mode == "binary":
        need = npts * rec.itemsize
        if len(body) < need:
            raise PointCloudError(path, f"truncated data: {len(body)} bytes for {npts} points of "
                                        f"{rec.itemsize} bytes ({need} needed)")
        arr = np.frombuffer(body, dtype=rec, count=npts)
    elif mode == "binary_compressed":
        arr = _pcd_compressed(path, body, rec, npts)
    else:
        raise PointCloudError(path, f"bad header: unknown DATA {mode!r} (ascii, binary, binary_compressed)")

    cols = {f: arr[u] for f, u in zip(fields, names, strict=True) if f != "_" and rec[u].shape == ()}
    pts = _xyz_from_columns(path, cols)
    labels = cols.get("label")
    return pts, labels


def _pcd_ascii(path, body: bytes, rec: np.dtype, npts: int) -> np.ndarray:
    text = body.decode("ascii", errors="strict")
    rows = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if len(rows) < npts:
        raise PointCloudError(path, f"truncated data: {len(rows)} rows for {npts} points")
    ncol = sum(int(np.prod(rec[n].shape)) for n in rec.names)
    flat = np.empty((npts, ncol), dtype=np.float64)
    for i, row in enumerate(rows[:npts]):
        vals = row.split()
        if len(vals) != ncol:
            raise PointCloudError(path, f"bad data: row {i + 1} has {len(vals)} values, expected {ncol}")
        try:
            flat[i] = [float(v) for v in vals]
        except ValueError:
            raise PointCloudError(path, f"bad data: row {i + 1} is not numeric: {row[:60]!r}") from None
    arr = np.zeros(npts, dtype=rec)
    col = 0
    for name in rec.names:
        width = int(np.prod(rec[name].shape))
        vals = flat[:, col:col + width]
        col += width
        base = rec[name].base
        if base.kind in "iu":
            info = np.iinfo(base)
            if not np.isfinite(vals).all() or vals.min(initial=0) < info.min or vals.max(initial=0) > info.max:
                raise PointCloudError(path, f"bad data: field {name!r} has values out of range for {base}")
        arr[name] = vals.reshape((npts,) + rec[name].shape).astype(base)
    return arr


def _pcd_compressed(path, body: memoryview, rec: np.dtype, npts: int) -> np.ndarray:
    if len(body) < 8:
        raise PointCloudError(path, "truncated data: no binary_compressed size header")
    csize, usize = struct.unpack("<II", body[:8])
    need = npts * rec.itemsize
    if usize != need:
        raise PointCloudError(path, f"bad data: uncompressed size {usize} does not match {npts} points of "
                                    f"{rec.itemsize} bytes ({need})")
    if len(body) - 8 < csize:
        raise PointCloudError(path, f"truncated data: {len(body) - 8} compressed bytes, header says {csize}")
    if need == 0:
        return np.zeros(0, dtype=rec)
    if csize == 0 or need > _LZF_MAX_RATIO * csize + 1024:
        raise PointCloudError(path, f"bad data: {csize} compressed bytes cannot hold {need} bytes")
    try:
        raw = lzf.decompress(bytes(body[8:8 + csize]), need)
    except ValueError:
        raw = None
    if raw is None or len(raw) != need:
        raise PointCloudError(path, "bad data: LZF stream is corrupt or does not match the header")
    arr = np.empty(npts, dtype=rec)
    off = 0
    for name in rec.names:  # column-major: all values of a field, then the next field
        sub = rec[name]
        nbytes = npts * sub.itemsize
        arr[name] = np.frombuffer(raw, dtype=sub.base, count=npts * int(np.prod(sub.shape)),
                                  offset=off).reshape((npts,) + sub.shape)
        off += nbytes
    return arr


# ----------------------------------------------------------------------------------------------------------- PLY

_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
              "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
              "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}


def _ply_type(path, name: str) -> str:
    if name not in _PLY_TYPES:
        raise PointCloudError(path, f"unknown type: PLY property type {name!r}")
    return _PLY_TYPES[name]


def _read_ply(path: Path):
    data = path.read_bytes()
    if not data.startswith(b"ply"):
        raise PointCloudError(path, "bad header: not a PLY file (no 'ply' magic)")
    lines, body_at = _read_header_lines(path, data, lambda ln: ln == "end_header")
    fmt = None
    elements: list[dict] = []
    for line in lines[1:-1]:
        parts = line.split()
        if not parts or parts[0] in ("comment", "obj_info"):
            continue
        if parts[0] == "format":
            if len(parts) < 2 or parts[1] not in ("ascii", "binary_little_endian", "binary_big_endian"):
                raise PointCloudError(path, f"bad header: unknown PLY format line {line[:60]!r}")
            fmt = parts[1]
        elif parts[0] == "element":
            if len(parts) != 3:
                raise PointCloudError(path, f"bad header: malformed element line {line[:60]!r}")
            elements.append({"name": parts[1], "count": _int_field(path, "element count", parts[2]), "props": []})
        elif parts[0] == "property":
            if not elements:
                raise PointCloudError(path, "bad header: property before any element")
            if len(parts) == 5 and parts[1] == "list":
                elements[-1]["props"].append((parts[4], _ply_type(path, parts[2]), _ply_type(path, parts[3])))
            elif len(parts) == 3:
                elements[-1]["props"].append((parts[2], _ply_type(path, parts[1]), None))
            else:
                raise PointCloudError(path, f"bad header: malformed property line {line[:60]!r}")
        else:
            raise PointCloudError(path, f"bad header: unknown PLY header line {line[:40]!r}")
    if fmt is None:
        raise PointCloudError(path, "bad header: no format line")
    if not any(e["name"] == "vertex" for e in elements):
        raise PointCloudError(path, "bad header: no vertex element")
    if fmt == "ascii":
        return _ply_ascii(path, data[body_at:], elements)
    return _ply_binary(path, memoryview(data)[body_at:], elements, "<" if fmt == "binary_little_endian" else ">")


def _ply_ascii(path, body: bytes, elements):
    rows = body.decode("ascii").splitlines()
    at = 0
    for el in elements:
        if el["name"] != "vertex":
            at += el["count"]
            continue
        if any(lt is not None for _, _, lt in el["props"]):
            raise PointCloudError(path, "unknown type: list properties on the vertex element")
        n, names = el["count"], [p[0] for p in el["props"]]
        block = rows[at:at + n]
        if len(block) < n:
            raise PointCloudError(path, f"truncated data: {len(block)} vertex rows for {n} vertices")
        vals = np.empty((n, len(names)), dtype=np.float64)
        for i, row in enumerate(block):
            tok = row.split()
            if len(tok) != len(names):
                raise PointCloudError(path, f"bad data: vertex row {i + 1} has {len(tok)} values, "
                                            f"expected {len(names)}")
            try:
                vals[i] = [float(t) for t in tok]
            except ValueError:
                raise PointCloudError(path, f"bad data: vertex row {i + 1} is not numeric: {row[:60]!r}") from None
        cols = {name: vals[:, j] for j, name in enumerate(names)}
        return _xyz_from_columns(path, cols), cols.get("label")
    raise PointCloudError(path, "bad header: no vertex element")  # pragma: no cover - checked by the caller


def _ply_binary(path, body: memoryview, elements, endian: str):
    off = 0
    for el in elements:
        n = el["count"]
        if all(lt is None for _, _, lt in el["props"]):
            rec = np.dtype([(name, endian + t) for name, t, _ in el["props"]]) if el["props"] else None
            size = n * (rec.itemsize if rec is not None else 0)
            if el["name"] == "vertex":
                if rec is None:
                    raise PointCloudError(path, "bad header: vertex element has no properties")
                if len(body) - off < size:
                    raise PointCloudError(path, f"truncated data: {len(body) - off} bytes for {n} vertices of "
                                                f"{rec.itemsize} bytes")
                arr = np.frombuffer(body, dtype=rec, count=n, offset=off)
                cols = {name: arr[name] for name in rec.names}
                return _xyz_from_columns(path, cols), cols.get("label")
            if len(body) - off < size:
                raise PointCloudError(path, f"truncated data in element {el['name']!r}")
            off += size
        else:
            if el["name"] == "vertex":
                raise PointCloudError(path, "unknown type: list properties on the vertex element")
            off = _skip_list_element(path, body, off, el, endian)
    raise PointCloudError(path, "bad header: no vertex element")  # pragma: no cover - checked by the caller


def _skip_list_element(path, body: memoryview, off: int, el: dict, endian: str) -> int:
    """Walk the rows of an element with list properties (faces before vertices are rare) and return the end."""
    for _ in range(el["count"]):
        for _, t, lt in el["props"]:
            if lt is None:
                off += np.dtype(t).itemsize
                continue
            ct = np.dtype(endian + t)
            if len(body) - off < ct.itemsize:
                raise PointCloudError(path, f"truncated data in element {el['name']!r}")
            length = int(np.frombuffer(body, dtype=ct, count=1, offset=off)[0])
            if length < 0:
                raise PointCloudError(path, f"bad data: negative list length in element {el['name']!r}")
            off += ct.itemsize + length * np.dtype(lt).itemsize
        if off > len(body):
            raise PointCloudError(path, f"truncated data in element {el['name']!r}")
    return off


# ------------------------------------------------------------------------------------------------ NPY, NPZ, TXT


def _array_to_cloud(path, arr: np.ndarray, labels=None):
    if arr.dtype.names:  # structured array with named fields
        cols = {n: arr[n] for n in arr.dtype.names if arr[n].ndim == arr.ndim}
        pts = _xyz_from_columns(path, cols)
        return pts, labels if labels is not None else cols.get("label")
    if arr.dtype.kind not in "fiub":
        raise PointCloudError(path, f"unknown type: array of dtype {arr.dtype} is not numeric")
    if arr.ndim == 3 and arr.shape[2] >= 3:  # organised (H, W, C)
        arr = arr.reshape(-1, arr.shape[2])
    if arr.ndim != 2 or arr.shape[1] < 3:
        raise PointCloudError(path, f"expected an (N, 3) array of points (x, y, z columns), got shape {arr.shape}")
    if arr.shape[0] in (3, 4) and arr.shape[1] > arr.shape[0]:  # x, y, z [label] as rows: not 3 or 4 points
        raise PointCloudError(path, f"expected an (N, 3) array of points (x, y, z columns), got shape {arr.shape}: "
                                    "transposed? save the points as rows (np.save(path, points.T))")
    if labels is None and arr.shape[1] == 4 and _integral(arr[:, 3]):
        labels = arr[:, 3]
    return arr[:, :3], labels


def _integral(col: np.ndarray) -> bool:
    col = np.asarray(col)
    if col.dtype.kind in "iub":
        return True
    return bool(np.isfinite(col).all() and (col == np.round(col)).all() and (col >= 0).all())


def _read_npy(path: Path):
    # memory-mapped first, so that a header claiming more data than the file holds fails before any allocation
    arr = np.load(path, allow_pickle=False, mmap_mode="r")
    return _array_to_cloud(path, np.array(arr))


def _read_npz(path: Path):
    with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:  # our handle: closed even when zip fails
        keys = list(z.keys())
        if not keys:
            raise PointCloudError(path, "empty NPZ archive (no arrays)")
        key = "points" if "points" in keys else keys[0]
        arr = z[key]
        labels = None
        for lk in ("labels", "label", "mask"):
            if lk in keys and lk != key:
                labels = np.asarray(z[lk]).reshape(-1)
                break
    return _array_to_cloud(path, arr, labels)



def _read_txt(path: Path):
    data = path.read_bytes()
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise PointCloudError(path, "bad data: not a text file (non-ASCII bytes)") from None
    first = next((ln.split("#", 1)[0] for ln in text.splitlines() if ln.split("#", 1)[0].strip()), None)
    if first is None:
        return np.zeros((0, 3)), None
    delim = "," if "," in first else None
    try:
        arr = np.loadtxt(io.StringIO(text), delimiter=delim, comments="#", ndmin=2, dtype=np.float64)
    except ValueError as exc:
        raise PointCloudError(path, f"bad data: {str(exc).split(';')[0]}") from None
    if arr.shape[1] < 3:
        raise PointCloudError(path, f"bad data: {arr.shape[1]} values per line; expected x y z [label]")
    labels = arr[:, 3] if arr.shape[1] == 4 else None
    if labels is not None and not _integral(labels):
        raise PointCloudError(path, "bad data: the fourth column (label) must hold non-negative integers")
    return arr[:, :3], labels
