"""Point-cloud files: round trips of every format and encoding, foreign field layouts, malformed and fuzzed files."""

from __future__ import annotations

import os
import struct
import tempfile
from pathlib import Path

import lzf
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgead.formats.pointcloud import PointCloudError, read_labeled, read_points, write_pcd, write_ply


def _cloud(n=200, seed=0, nan_rows=()):
    pts = (np.random.default_rng(seed).normal(size=(n, 3)) * [40, 30, 20] + [100, -250, 700]).astype(np.float32)
    pts[list(nan_rows)] = np.nan
    labels = (np.arange(n) % 7 == 0).astype(np.uint8)
    return pts, labels


# ------------------------------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("fmt", ["ascii", "binary", "binary_compressed"])
@pytest.mark.parametrize("with_labels", [False, True])
def test_pcd_round_trip(tmp_path, fmt, with_labels):
    pts, labels = _cloud(nan_rows=(3, 17))
    path = tmp_path / "c.pcd"
    write_pcd(path, pts, fmt=fmt, labels=labels if with_labels else None)
    got, got_labels = read_labeled(path)
    assert got.dtype == np.float32 and got.shape == pts.shape
    np.testing.assert_array_equal(got, pts)  # bit-exact, NaN rows kept in place
    if with_labels:
        np.testing.assert_array_equal(got_labels, labels)
    else:
        assert got_labels is None
    np.testing.assert_array_equal(read_points(path), pts)


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("with_labels", [False, True])
def test_ply_round_trip(tmp_path, binary, with_labels):
    pts, labels = _cloud(nan_rows=(5,))
    path = tmp_path / "c.ply"
    write_ply(path, pts, binary=binary, labels=labels if with_labels else None)
    got, got_labels = read_labeled(path)
    np.testing.assert_array_equal(got, pts)
    assert (got_labels is not None) == with_labels
    if with_labels:
        np.testing.assert_array_equal(got_labels, labels)


def test_npy_npz_round_trip(tmp_path):
    pts, labels = _cloud()
    np.save(tmp_path / "a.npy", pts)
    np.testing.assert_array_equal(read_points(tmp_path / "a.npy"), pts)
    np.save(tmp_path / "b.npy", pts.astype(np.float64))
    np.testing.assert_array_equal(read_points(tmp_path / "b.npy"), pts)
    # an (N, 4) array of x y z label, like a 4-column text file
    np.save(tmp_path / "c.npy", np.column_stack([pts, labels]).astype(np.float64))
    got, got_labels = read_labeled(tmp_path / "c.npy")
    np.testing.assert_array_equal(got, pts)
    np.testing.assert_array_equal(got_labels, labels)
    # npz: the "points" array wins over an earlier one; "labels" are picked up
    np.savez(tmp_path / "d.npz", other=np.zeros((2, 3)), points=pts, labels=labels)
    got, got_labels = read_labeled(tmp_path / "d.npz")
    np.testing.assert_array_equal(got, pts)
    np.testing.assert_array_equal(got_labels, labels)
    np.savez_compressed(tmp_path / "e.npz", pts)  # no "points": the first array
    np.testing.assert_array_equal(read_points(tmp_path / "e.npz"), pts)


@pytest.mark.parametrize("sep", [" ", ",", ", ", "\t"])
def test_txt_round_trip(tmp_path, sep):
    pts, labels = _cloud(50)
    rows = [sep.join(f"{v:.9g}" for v in p) for p in pts.astype(np.float64)]
    (tmp_path / "a.txt").write_text("# x y z\n" + "\n".join(rows) + "\n")
    got, got_labels = read_labeled(tmp_path / "a.txt")
    np.testing.assert_array_equal(got, pts)
    assert got_labels is None
    rows = [sep.join([f"{v:.9g}" for v in p] + [str(int(lab))]) for p, lab in zip(pts.astype(np.float64), labels,
                                                                                strict=True)]
    (tmp_path / "b.txt").write_text("\n".join(rows))  # no final newline
    got, got_labels = read_labeled(tmp_path / "b.txt")
    np.testing.assert_array_equal(got, pts)
    np.testing.assert_array_equal(got_labels, labels)


def test_labels_as_float_mask(tmp_path):
    """Real3D-AD ground truth stores labels as 0/1 in a text column; they come back as uint8."""
    (tmp_path / "gt.txt").write_text("1.5 2.5 3.5 0.0\n4 5 6 1.0\n7 8 9 1\n")
    pts, labels = read_labeled(tmp_path / "gt.txt")
    assert labels.dtype == np.uint8 and labels.tolist() == [0, 1, 1]
    np.testing.assert_array_equal(pts[0], [1.5, 2.5, 3.5])


def test_write_is_deterministic(tmp_path):
    pts, labels = _cloud()
    for fmt in ("ascii", "binary", "binary_compressed"):
        write_pcd(tmp_path / "a.pcd", pts, fmt=fmt, labels=labels)
        write_pcd(tmp_path / "b.pcd", pts, fmt=fmt, labels=labels)
        assert (tmp_path / "a.pcd").read_bytes() == (tmp_path / "b.pcd").read_bytes()


def test_empty_clouds(tmp_path):
    for fmt in ("ascii", "binary", "binary_compressed"):
        write_pcd(tmp_path / f"{fmt}.pcd", np.zeros((0, 3)), fmt=fmt)
        assert read_points(tmp_path / f"{fmt}.pcd").shape == (0, 3)
    write_ply(tmp_path / "e.ply", np.zeros((0, 3)))
    assert read_points(tmp_path / "e.ply").shape == (0, 3)


# ------------------------------------------------------------------------------ foreign files: PCL and PLY variants


def pcd_bytes(fields, sizes, types, counts, rows: np.ndarray, mode: str, width=None, height=1) -> bytes:
    """A PCD file as PCL writes it, for a structured array ``rows`` whose fields follow ``fields``."""
    n = len(rows)
    width = n if width is None else width
    header = (f"# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\nFIELDS {' '.join(fields)}\n"
              f"SIZE {' '.join(map(str, sizes))}\nTYPE {' '.join(types)}\nCOUNT {' '.join(map(str, counts))}\n"
              f"WIDTH {width}\nHEIGHT {height}\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\nDATA {mode}\n").encode()
    if mode == "binary":
        return header + rows.tobytes()
    if mode == "binary_compressed":
        raw = b"".join(np.ascontiguousarray(rows[name]).tobytes() for name in rows.dtype.names)
        packed = lzf.compress(raw, len(raw) * 2 + 64)
        return header + struct.pack("<II", len(packed), len(raw)) + packed
    lines = []
    for r in rows:
        vals = []
        for name in rows.dtype.names:
            vals += [repr(float(v)) if rows.dtype[name].base.kind == "f" else str(int(v))
                     for v in np.atleast_1d(r[name])]
        lines.append(" ".join(vals).replace("nan", "nan"))
    return header + ("\n".join(lines) + "\n").encode()


ORGANISED = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<f4"), ("normal_x", "<f4"),
                      ("normal_y", "<f4"), ("normal_z", "<f4"), ("curvature", "<f4"), ("label", "<u4")])


def organised_rows(w=4, h=3):
    rows = np.zeros(w * h, dtype=ORGANISED)
    rng = np.random.default_rng(3)
    for c in ("x", "y", "z", "normal_x", "normal_y", "normal_z", "curvature"):
        rows[c] = rng.normal(size=w * h)
    rows["rgb"] = np.frombuffer(np.uint32(0x00FF8040).tobytes() * (w * h), dtype="<f4")
    rows["label"] = np.arange(w * h) % 2
    nan = [1, 6, 11]  # unmeasured pixels of an organised cloud
    for c in ("x", "y", "z"):
        rows[c][nan] = np.nan
    return rows, nan


@pytest.mark.parametrize("mode", ["ascii", "binary", "binary_compressed"])
def test_pcd_organised_with_nan_and_extra_fields(tmp_path, mode):
    rows, nan = organised_rows()
    n = len(ORGANISED.names)
    data = pcd_bytes(list(ORGANISED.names), [4] * n, ["F"] * (n - 1) + ["U"], [1] * n, rows, mode, width=4, height=3)
    (tmp_path / "o.pcd").write_bytes(data)
    pts, labels = read_labeled(tmp_path / "o.pcd")
    assert pts.shape == (12, 3)
    assert np.isnan(pts[nan]).all() and np.isfinite(np.delete(pts, nan, 0)).all()
    np.testing.assert_array_equal(pts[:, 0], rows["x"])
    np.testing.assert_array_equal(labels, rows["label"].astype(bool))


@pytest.mark.parametrize("mode", ["ascii", "binary", "binary_compressed"])
def test_pcd_mixed_sizes_counts_and_padding(tmp_path, mode):
    """Doubles for x/y/z, a multi-count field, PCL's '_' padding and small integer types, in any field order."""
    dt = np.dtype([("intensity", "<u1"), ("x", "<f8"), ("_", "<u1", (3,)), ("y", "<f8"), ("hist", "<i2", (2,)),
                   ("z", "<f8"), ("ring", "<u2")])
    rows = np.zeros(30, dtype=dt)
    rng = np.random.default_rng(5)
    rows["x"], rows["y"], rows["z"] = rng.normal(size=(3, 30)) * 1000
    rows["intensity"] = np.arange(30)
    rows["hist"] = rng.integers(-5, 5, size=(30, 2))
    data = pcd_bytes(list(dt.names), [1, 8, 1, 8, 2, 8, 2], ["U", "F", "U", "F", "I", "F", "U"],
                     [1, 1, 3, 1, 2, 1, 1], rows, mode)
    (tmp_path / "m.pcd").write_bytes(data)
    pts, labels = read_labeled(tmp_path / "m.pcd")
    assert labels is None
    np.testing.assert_array_equal(pts, np.column_stack([rows["x"], rows["y"], rows["z"]]).astype(np.float32))


@pytest.mark.parametrize("fmt", ["binary_little_endian", "binary_big_endian", "ascii"])
@pytest.mark.parametrize("faces_first", [False, True])
def test_ply_extra_properties_and_faces(tmp_path, fmt, faces_first):
    end = ">" if fmt == "binary_big_endian" else "<"
    vdt = np.dtype([("x", end + "f8"), ("nx", end + "f4"), ("y", end + "f8"), ("red", "u1"), ("z", end + "f8"),
                    ("label", end + "i4")])
    n = 25
    v = np.zeros(n, dtype=vdt)
    rng = np.random.default_rng(7)
    v["x"], v["y"], v["z"] = rng.normal(size=(3, n))
    v["label"] = np.arange(n) % 3 == 0
    faces = [(3, 0, 1, 2), (4, 1, 2, 3, 4)]
    vhead = ("element vertex 25\nproperty double x\nproperty float nx\nproperty double y\nproperty uchar red\n"
             "property double z\nproperty int label\n")
    fhead = "element face 2\nproperty list uchar int vertex_indices\nproperty uchar flags\n"
    head = f"ply\nformat {fmt} 1.0\ncomment test\n" + (fhead + vhead if faces_first else vhead + fhead) + "end_header\n"
    if fmt == "ascii":
        vtxt = "\n".join(" ".join(repr(float(r[c])) if vdt[c].kind == "f" else str(int(r[c])) for c in vdt.names)
                         for r in v) + "\n"
        ftxt = "".join(" ".join(map(str, f)) + " 0\n" for f in faces)
        body = (ftxt + vtxt if faces_first else vtxt + ftxt).encode()
    else:
        fbin = b"".join(struct.pack(end + "B" + "i" * f[0] + "B", f[0], *f[1:], 0) for f in faces)
        body = fbin + v.tobytes() if faces_first else v.tobytes() + fbin
    (tmp_path / "p.ply").write_bytes(head.encode() + body)
    pts, labels = read_labeled(tmp_path / "p.ply")
    np.testing.assert_array_equal(pts, np.column_stack([v["x"], v["y"], v["z"]]).astype(np.float32))
    np.testing.assert_array_equal(labels, v["label"].astype(np.uint8))


# --------------------------------------------------------------------------------------------------- malformed files

MALFORMED = {
    "no_xyz.pcd": (b"VERSION 0.7\nFIELDS a b c\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 1\nHEIGHT 1\n"
                   b"POINTS 1\nDATA ascii\n1 2 3\n", "no x/y/z field"),
    "truncated.pcd": (b"FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 10\nHEIGHT 1\nPOINTS 10\n"
                      b"DATA binary\n" + b"\0" * 50, "truncated data"),
    "no_data.pcd": (b"FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nWIDTH 1\nPOINTS 1\n", "bad header"),
    "bad_type.pcd": (b"FIELDS x y z\nSIZE 4 4 4\nTYPE F Q F\nCOUNT 1 1 1\nPOINTS 1\nDATA ascii\n1 2 3\n",
                     "unknown type"),
    "bad_size.pcd": (b"FIELDS x y z\nSIZE 4 3 4\nTYPE F F F\nCOUNT 1 1 1\nPOINTS 1\nDATA ascii\n1 2 3\n",
                     "unknown type"),
    "bad_count.pcd": (b"FIELDS x y z\nSIZE 4 4\nTYPE F F F\nPOINTS 1\nDATA ascii\n1 2 3\n", "bad header"),
    "wh_mismatch.pcd": (b"FIELDS x y z\nWIDTH 3\nHEIGHT 2\nPOINTS 5\nDATA ascii\n", "bad header"),
    "bad_mode.pcd": (b"FIELDS x y z\nPOINTS 1\nDATA zip\n", "unknown DATA"),
    "short_ascii.pcd": (b"FIELDS x y z\nPOINTS 3\nDATA ascii\n1 2 3\n4 5 6\n", "truncated data"),
    "ragged_ascii.pcd": (b"FIELDS x y z\nPOINTS 2\nDATA ascii\n1 2 3\n4 5\n", "row 2"),
    "huge.pcd": (b"FIELDS x y z\nPOINTS 999999999999\nDATA binary_compressed\n" + struct.pack("<II", 10, 0)
                 + b"\0" * 10, "uncompressed size"),
    "bomb.pcd": (b"FIELDS x y z\nPOINTS 100000000\nDATA binary_compressed\n"
                 + struct.pack("<II", 4, 1200000000) + b"\0" * 4, "cannot hold"),
    "corrupt_lzf.pcd": (b"FIELDS x y z\nPOINTS 100\nDATA binary_compressed\n" + struct.pack("<II", 8, 1200)
                        + b"\xff" * 8, "LZF"),
    "not_ply.ply": (b"hello\n", "not a PLY"),
    "no_vertex.ply": (b"ply\nformat ascii 1.0\nelement face 0\nproperty list uchar int vi\nend_header\n",
                      "no vertex"),
    "short.ply": (b"ply\nformat binary_little_endian 1.0\nelement vertex 5\nproperty float x\nproperty float y\n"
                  b"property float z\nend_header\n" + b"\0" * 20, "truncated data"),
    "bad_prop.ply": (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty quad x\nend_header\n1\n", "unknown type"),
    "no_format.ply": (b"ply\nelement vertex 1\nproperty float x\nend_header\n1\n", "no format"),
    "ragged.txt": (b"1 2 3\n4 5\n", "bad data"),
    "words.txt": (b"1 2 3\n4 five 6\n", "bad data"),
    "two_cols.txt": (b"1 2\n3 4\n", "expected x y z"),
    "bad_label.txt": (b"1 2 3 0.5\n", "label"),
    "binary.txt": (b"\x89\xff\x00\x01", "not a text file"),
    "two_cols.npy": (None, "(N, 3)"),
    "strings.npy": (None, "not numeric"),
    "bad.npz": (b"PK\x03\x04garbage", "malformed NPZ"),
    "points.xyzrgb": (b"1 2 3\n", "unsupported point-cloud format"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_files_raise_point_cloud_error(tmp_path, name):
    content, expected = MALFORMED[name]
    path = tmp_path / name
    if name == "two_cols.npy":
        np.save(path, np.zeros((4, 2)))
    elif name == "strings.npy":
        np.save(path, np.array([["a", "b", "c"]]))
    else:
        path.write_bytes(content)
    with pytest.raises(PointCloudError) as err:
        read_points(path)
    msg = str(err.value)
    assert msg.startswith(str(path)), msg  # names the file...
    assert expected in msg, msg  # ...and the problem
    assert isinstance(err.value, ValueError)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(PointCloudError, match="no such file"):
        read_points(tmp_path / "nope.pcd")
    (tmp_path / "dir.pcd").mkdir()
    with pytest.raises(PointCloudError, match="not a regular file"):
        read_points(tmp_path / "dir.pcd")


def test_write_rejects_bad_arguments(tmp_path):
    with pytest.raises(PointCloudError, match=r"shape \(N, 3\)"):
        write_pcd(tmp_path / "a.pcd", np.zeros((4, 2)))
    with pytest.raises(PointCloudError, match="unknown PCD data format"):
        write_pcd(tmp_path / "a.pcd", np.zeros((4, 3)), fmt="zip")
    with pytest.raises(PointCloudError, match="labels"):
        write_pcd(tmp_path / "a.pcd", np.zeros((4, 3)), labels=[0, 1])
    with pytest.raises(PointCloudError, match="labels"):
        write_ply(tmp_path / "a.ply", np.zeros((2, 3)), labels=[-1, 0])


# ---------------------------------------------------------------------------------------------------------- fuzzing


def _valid_files() -> dict[str, bytes]:
    pts, labels = _cloud(40, nan_rows=(2,))
    out = {}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        for fmt in ("ascii", "binary", "binary_compressed"):
            write_pcd(d / "a.pcd", pts, fmt=fmt, labels=labels)
            out[f"{fmt}.pcd"] = (d / "a.pcd").read_bytes()
        for binary in (True, False):
            write_ply(d / "a.ply", pts, binary=binary, labels=labels)
            out[f"{'bin' if binary else 'asc'}.ply"] = (d / "a.ply").read_bytes()
        np.save(d / "a.npy", pts)
        out["a.npy"] = (d / "a.npy").read_bytes()
        np.savez_compressed(d / "a.npz", points=pts, labels=labels)
        out["a.npz"] = (d / "a.npz").read_bytes()
        rows = "\n".join(f"{x:.4f},{y:.4f},{z:.4f},{lab}" for (x, y, z), lab in zip(pts, labels, strict=True))
        out["a.txt"] = rows.encode()
    rows, _ = organised_rows()
    n = len(ORGANISED.names)
    out["org.pcd"] = pcd_bytes(list(ORGANISED.names), [4] * n, ["F"] * (n - 1) + ["U"], [1] * n, rows,
                               "binary_compressed", width=4, height=3)
    return out


VALID = _valid_files()
FUZZ_EXAMPLES = int(os.environ.get("EDGEAD_FUZZ_EXAMPLES", "400"))  # raise it for a long fuzzing session


@st.composite
def corrupted(draw):
    name = draw(st.sampled_from(sorted(VALID)))
    data = bytearray(VALID[name])
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "digit"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "truncate":
            del data[pos:]
        elif op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 16))]
        elif op == "digit" and data:  # numbers in headers are the sensitive spots
            data[pos:pos + 1] = draw(st.sampled_from([b"9", b"0", b"-", b"99999999999", b" ", b"\n", b"nan"]))
    return name, bytes(data)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(corrupted())
def test_fuzzed_files_raise_only_point_cloud_error(case):
    name, data = case
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        path.write_bytes(data)
        try:
            pts, labels = read_labeled(path)
        except PointCloudError as exc:
            assert str(exc).startswith(str(path))
            return
        assert pts.dtype == np.float32 and pts.ndim == 2 and pts.shape[1] == 3
        assert labels is None or (labels.shape == (len(pts),) and labels.dtype == np.uint8)
