"""Triangle meshes (``.obj``, ``.stl`` ASCII or binary, ``.ply`` with faces) and uniform sampling of their
surfaces: a plant's CAD library as training shapes for ``edgead pretrain``.

``read_mesh`` returns vertices (V, 3) float64 and triangles (F, 3) int64 (polygons are fanned into triangles);
``sample_surface`` draws points uniformly by area. Problems raise ``PointCloudError`` naming the file.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from edgead.formats.pointcloud import PointCloudError, _int_field, _ply_type, _read_header_lines

MESH_SUFFIXES = (".obj", ".stl", ".ply")


def read_mesh(path) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (V, 3) float64, triangles (F, 3) int64) of a mesh file."""
    path = Path(path)
    reader = {".obj": _read_obj, ".stl": _read_stl, ".ply": _read_ply_mesh}.get(path.suffix.lower())
    if reader is None:
        raise PointCloudError(path, f"unknown type: not a mesh file ({', '.join(MESH_SUFFIXES)})")
    if not path.is_file():
        raise PointCloudError(path, "no such file")
    v, f = reader(path)
    if len(f) == 0:
        raise PointCloudError(path, "no faces: a point cloud, not a mesh")
    if f.min() < 0 or f.max() >= len(v):
        raise PointCloudError(path, f"bad data: face indices outside 0..{len(v) - 1}")
    if not np.isfinite(v).all():
        raise PointCloudError(path, "bad data: non-finite vertex coordinates")
    return v, f


def sample_surface(vertices: np.ndarray, triangles: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` points uniformly by area on the triangles. (V, 3), (F, 3) -> (n, 3) float32."""
    a, b, c = (vertices[triangles[:, i]] for i in range(3))
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    if not area.sum() > 0:
        raise ValueError("the mesh has no area")
    tri = rng.choice(len(triangles), size=n, p=area / area.sum())
    su, w = np.sqrt(rng.random(n))[:, None], rng.random(n)[:, None]
    return ((1 - su) * a[tri] + su * (1 - w) * b[tri] + su * w * c[tri]).astype(np.float32)


def _fan(polygons: list[list[int]]) -> np.ndarray:
    """Polygons (vertex index lists) -> triangles (F, 3), each polygon fanned from its first vertex."""
    tris = [(p[0], p[i], p[i + 1]) for p in polygons for i in range(1, len(p) - 1)]
    return np.array(tris, dtype=np.int64).reshape(-1, 3)


def _read_obj(path: Path) -> tuple[np.ndarray, np.ndarray]:
    verts, polys = [], []
    for no, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        tok = line.split()
        if not tok:
            continue
        try:
            if tok[0] == "v":
                verts.append([float(x) for x in tok[1:4]])
            elif tok[0] == "f":  # "f 1 2 3" or "f 1/1/1 2/2/2 ...", 1-based, negative = from the end
                idx = [int(t.split("/")[0]) for t in tok[1:]]
                polys.append([i - 1 if i > 0 else len(verts) + i for i in idx])
        except ValueError:
            raise PointCloudError(path, f"bad data: line {no} is not a valid vertex or face: {line[:60]!r}") from None
    if any(len(v) != 3 for v in verts):
        raise PointCloudError(path, "bad data: a vertex line without 3 coordinates")
    return np.array(verts, dtype=np.float64).reshape(-1, 3), _fan(polys)


def _read_stl(path: Path) -> tuple[np.ndarray, np.ndarray]:
    data = path.read_bytes()
    if len(data) >= 84:
        (count,) = struct.unpack("<I", data[80:84])
        if len(data) == 84 + 50 * count:  # binary: the size says so (ASCII files also start with "solid")
            rec = np.dtype([("n", "<f4", 3), ("v", "<f4", (3, 3)), ("attr", "<u2")])
            tri = np.frombuffer(data, dtype=rec, count=count, offset=84)["v"].astype(np.float64)
            return tri.reshape(-1, 3), np.arange(3 * count, dtype=np.int64).reshape(-1, 3)
    if not data.lstrip().lower().startswith(b"solid"):
        raise PointCloudError(path, "bad header: neither a binary STL (size mismatch) nor an ASCII one")
    verts = []
    for line in data.decode("ascii", errors="replace").splitlines():
        tok = line.split()
        if tok[:1] == ["vertex"]:
            try:
                verts.append([float(x) for x in tok[1:4]])
            except ValueError:
                raise PointCloudError(path, f"bad data: {line.strip()[:60]!r}") from None
    if len(verts) % 3:
        raise PointCloudError(path, "truncated data: vertex count is not a multiple of 3")
    return np.array(verts, dtype=np.float64).reshape(-1, 3), np.arange(len(verts), dtype=np.int64).reshape(-1, 3)


def _read_ply_mesh(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The vertex and face elements of a PLY mesh (other elements are skipped)."""
    data = path.read_bytes()
    if not data.startswith(b"ply"):
        raise PointCloudError(path, "bad header: not a PLY file (no 'ply' magic)")
    lines, body_at = _read_header_lines(path, data, lambda ln: ln == "end_header")
    fmt, elements = None, []
    for line in lines[1:-1]:
        parts = line.split()
        if not parts or parts[0] in ("comment", "obj_info"):
            continue
        if parts[0] == "format" and len(parts) >= 2:
            fmt = parts[1]
        elif parts[0] == "element" and len(parts) == 3:
            elements.append((parts[1], _int_field(path, "element count", parts[2]), []))
        elif parts[0] == "property" and elements:
            props = elements[-1][2]
            if len(parts) == 5 and parts[1] == "list":
                props.append((parts[4], _ply_type(path, parts[3]), _ply_type(path, parts[2])))
            elif len(parts) == 3:
                props.append((parts[2], _ply_type(path, parts[1]), None))
            else:
                raise PointCloudError(path, f"bad header: malformed property line {line[:60]!r}")
        else:
            raise PointCloudError(path, f"bad header: unknown PLY header line {line[:40]!r}")
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise PointCloudError(path, f"bad header: unknown or missing PLY format {fmt!r}")
    if fmt == "ascii":
        rows = iter(data[body_at:].decode("ascii", errors="replace").split("\n"))
        read = lambda props: _ply_ascii_row(path, rows, props)  # noqa: E731
    else:
        reader = _BinaryRows(path, memoryview(data)[body_at:], "<" if fmt == "binary_little_endian" else ">")
        read = reader.row
    verts, polys = [], []
    for name, count, props in elements:
        for _ in range(count):
            row = read(props)
            if name == "vertex":
                verts.append([row["x"], row["y"], row["z"]])
            elif name == "face":
                polys.append([int(i) for i in row.get("vertex_indices", row.get("vertex_index", []))])
    return np.array(verts, dtype=np.float64).reshape(-1, 3), _fan(polys)


def _ply_ascii_row(path: Path, rows, props) -> dict:
    tok = next(rows, "").split()
    out, at = {}, 0
    try:
        for name, _, count_type in props:
            if count_type is None:
                out[name] = float(tok[at])
                at += 1
            else:
                n = int(tok[at])
                out[name] = [float(x) for x in tok[at + 1: at + 1 + n]]
                at += 1 + n
    except (IndexError, ValueError):
        raise PointCloudError(path, f"bad data: PLY row {' '.join(tok)[:60]!r}") from None
    return out


class _BinaryRows:
    """Reads PLY binary rows one property at a time (list properties make rows variable-sized)."""

    def __init__(self, path: Path, body: memoryview, endian: str):
        self.path, self.body, self.endian, self.off = path, body, endian, 0

    def _take(self, t: str, count: int = 1) -> np.ndarray:
        dt = np.dtype(self.endian + t)
        if self.off + dt.itemsize * count > len(self.body):
            raise PointCloudError(self.path, "truncated data: the PLY body ends inside an element")
        vals = np.frombuffer(self.body, dtype=dt, count=count, offset=self.off)
        self.off += dt.itemsize * count
        return vals

    def row(self, props) -> dict:
        out = {}
        for name, t, count_type in props:
            if count_type is None:
                out[name] = float(self._take(t)[0])
            else:
                out[name] = self._take(t, int(self._take(count_type)[0])).tolist()
        return out
