"""The grouping kernels (``edgead/kernels/*.cu``) compiled for an engine: PTX that any newer GPU's driver JIT-compiles,
and a cubin for the local GPU where there is one. The PTX's ISA version fixes the oldest driver that can load it;
both go into the manifest."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

KERNEL_SOURCES = Path(__file__).resolve().parent.parent / "kernels"
NVCC_FLAGS = ["--fmad=false", "-O3", "-Werror", "all-warnings"]  # --fmad=false: bit-exact with edgead.ops
PTX_ARCH = "compute_75"  # the oldest architecture the PTX targets (CUDA 13 supports sm_75 and newer)
# PTX ISA version -> (CUDA release that writes it, oldest Linux driver that JIT-compiles it); NVIDIA's release notes
MIN_DRIVER = {"8.0": ("12.0", "525.60.13"), "8.1": ("12.1", "530.30.02"), "8.2": ("12.2", "535.54.03"),
              "8.3": ("12.3", "545.23.06"), "8.4": ("12.4", "550.54.14"), "8.5": ("12.5", "555.42.02"),
              "8.6": ("12.7", "565.57.01"), "8.7": ("12.8", "570.26"), "8.8": ("12.9", "575.51.03"),
              "9.0": ("13.0", "580.65.06")}


def gpu_arch() -> str | None:
    """``sm_XY`` of GPU 0, or None without pycuda, a driver or a device."""
    try:
        import pycuda.driver as cuda

        cuda.init()
        if cuda.Device.count() == 0:
            return None
        major, minor = cuda.Device(0).compute_capability()
        return f"sm_{major}{minor}"
    except Exception:  # ImportError, or a pycuda/driver error: no usable GPU either way
        return None


def ptx_requirements(ptx: str) -> dict:
    """The ISA version a PTX file declares and the oldest driver that loads it (``min_driver`` None when the
    version is newer than this table: look it up in NVIDIA's release notes)."""
    found = re.search(r"^\s*\.version\s+(\d+\.\d+)", ptx, re.MULTILINE)
    isa = found.group(1) if found else None
    cuda, driver = MIN_DRIVER.get(isa, (None, None))
    return {"ptx_isa": isa, "ptx_cuda": cuda, "min_driver": driver, "ptx_arch": PTX_ARCH}


def compile_kernels(out: Path) -> dict | None:
    """Compile every kernel to PTX, plus a cubin for the local GPU where there is one, into ``out``. Returns the
    manifest's ``kernels`` entry, or None without nvcc."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    arch = gpu_arch()
    compiled = {}
    for cu in sorted(KERNEL_SOURCES.glob("*.cu")):
        targets = {f"edgead_{cu.stem}.ptx": ["-ptx", f"-arch={PTX_ARCH}"]}
        if arch:
            targets[f"edgead_{cu.stem}.{arch}.cubin"] = ["-cubin", f"-arch={arch}"]
        for fname, target in targets.items():
            proc = subprocess.run([nvcc, *NVCC_FLAGS, *target, "-o", str(Path(out) / fname), str(cu)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"nvcc failed on {cu.name}: {proc.stderr.strip()}")
        compiled[cu.stem] = sorted(targets)
    ptx = (Path(out) / f"edgead_{sorted(compiled)[0]}.ptx").read_text()
    return {"modules": compiled, "gpu_arch": arch, "flags": NVCC_FLAGS, **ptx_requirements(ptx)}
