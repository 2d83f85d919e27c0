"""golden's native kernel: exact mode's coding pass of a convolution layer in C with AVX-512.

``csrc/exact_conv.c`` computes what ``kernels.exact_conv_code`` computes, bit for bit
(the tests compare them), the float64 recomputation of the flagged neurons included. Numba
does not emit the register permutes and mask compares that make its table lookups and
threshold search cheap, and that kernel was most of exact mode's time beside the
convolutions (README, golden-model speed).

The kernel is compiled on first use with the C compiler found on PATH (``cc``, ``gcc`` or
``clang``; ``scripts/setup.sh`` installs one for the RTL benches) for this machine's CPU
(``-march=native``), into ``$ONESPIKE_CACHE`` or ``~/.cache/onespike``, keyed by the source,
the flags and the CPU. Where there is no compiler, the build fails, the CPU has no AVX-512,
or ``ONESPIKE_NATIVE=0``, :func:`library` returns None and golden runs the Numba kernel;
:func:`status` says which and why.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

SOURCE = Path(__file__).resolve().parent / "csrc" / "exact_conv.c"
#: -ffp-contract=off: no fused multiply-adds, so every product and sum rounds as Numba's do.
FLAGS = [
    "-O3",
    "-march=native",
    "-ffp-contract=off",
    "-fno-fast-math",
    "-fopenmp",
    "-shared",
    "-fPIC",
]

_state: dict = {}


def _cpu_key() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        info = ""
    lines = [ln for ln in info.splitlines() if ln.startswith(("model name", "flags"))][:2]
    return platform.machine() + "\n".join(lines)


def _cache_dir() -> Path:
    """``$ONESPIKE_CACHE``, else ``~/.cache/onespike``, else the temporary folder's."""
    if os.environ.get("ONESPIKE_CACHE"):
        return Path(os.environ["ONESPIKE_CACHE"])
    try:
        return Path.home() / ".cache" / "onespike"
    except RuntimeError:  # no home directory
        return Path(tempfile.gettempdir()) / "onespike-cache"


def _build() -> tuple[ctypes.CDLL | None, str]:
    if os.environ.get("ONESPIKE_NATIVE", "1") == "0":
        return None, "off (ONESPIKE_NATIVE=0)"
    cc = next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
    if cc is None:
        return None, "no C compiler on PATH (cc, gcc or clang)"
    src = SOURCE.read_bytes()
    key = hashlib.sha256(src + " ".join([cc, *FLAGS]).encode() + _cpu_key().encode())
    lib = _cache_dir() / f"exact_conv-{key.hexdigest()[:16]}.so"
    cache = lib.parent
    if not lib.exists():
        try:
            cache.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=cache) as tmp:
                out = Path(tmp) / lib.name
                run = subprocess.run([cc, *FLAGS, "-o", str(out), str(SOURCE), "-lm"],
                                     capture_output=True, text=True, timeout=120)  # fmt: skip
                if run.returncode != 0:
                    last = (run.stderr.strip().splitlines() or ["no message"])[-1]
                    return None, f"{cc} failed on {SOURCE.name}: {last}"
                os.replace(out, lib)  # atomic: a concurrent build writes the same file
        except (OSError, subprocess.SubprocessError) as err:
            return None, f"build failed: {err}"
    try:
        dll = ctypes.CDLL(str(lib))
    except OSError as err:
        return None, f"cannot load {lib}: {err}"
    if not dll.exact_conv_supported():
        return None, "this CPU has no AVX-512 (the Numba kernel runs)"
    dll.exact_conv_rows.restype = ctypes.c_int
    dll.exact_conv_rows.argtypes = _ARGTYPES
    return dll, f"native ({lib})"


i32, f32, f64, ptr = ctypes.c_int, ctypes.c_float, ctypes.c_double, ctypes.c_void_p
_ARGTYPES = [
    i32, i32, i32, i32, i32, ptr,  # threads, n, channels, oh, ow, zc
    ptr, ptr, ptr, i32, i32,  # bias, babs, sq_src, h, wd
    i32, i32, i32, i32, i32, i32, f64,  # kh, kw, sy, sx, py, px, norm_margin
    ptr, ptr, i32, i32, i32,  # wn, dec2, and its C, H, W
    i32, i32, i32, ptr, i32,  # s2y, s2x, off2, w2, has2
    ptr, ptr, f32, i32, ptr, ptr, ptr,  # theta, g, e, nt, pad, tabk, phk
    ptr, ptr, ptr, ptr, ptr,  # phase, dec, sq, fired, nflag
    ptr, ptr, i32, ptr, ptr, ptr,  # sp, x64 (NULL: none), C_in, table64, w64, sp2
    ptr, ptr, ptr, ptr, ptr, i32,  # table2_64, w2_64, bias64, theta64, th64, conv_first
]  # fmt: skip


def library() -> ctypes.CDLL | None:
    """The loaded native kernel, built on first use; None where it cannot run here."""
    if "lib" not in _state:
        _state["lib"], _state["why"] = _build()
    return _state["lib"]


def status() -> str:
    """Why :func:`library` is what it is, in words."""
    library()
    return _state["why"]


def _p(a: np.ndarray) -> int:
    assert a.flags.c_contiguous, "native kernel arrays must be C-contiguous"
    return a.ctypes.data


def exact_conv_rows(threads: int, zc, bias, babs, sq_src, ksize, conv_geo, norm_margin, wn,
                    dec2, w2, s2, off2, theta, g, e, pad, tabk, phk, phase, dec, sq, fired,
                    nflag, sp, x64, table64, w64, sp2, table2_64, w2_64, bias64, theta64, th64,
                    conv_first) -> None:  # fmt: skip
    """``kernels.exact_conv_code`` in C on every image, ``threads`` OpenMP threads over image
    ranges, with the same arguments and outputs (nflag: its nrec) plus g : float32 (C,) the
    rounding factor per channel; pad : float32 (T + 2,) −inf, the thresholds ascending,
    +inf; tabk, phk : (T + 1,) the decoded value and the phase of k thresholds reached.
    phase, dec : (N, C, OH, OW). Raises RuntimeError where the kernel fails (out of
    memory)."""
    lib = library()
    n, channels, _ = zc.shape
    oh, ow = phase.shape[2:]
    _, h, wd = sq_src.shape
    c2, h2, w2d = dec2.shape[1:] if dec2.shape[0] else (1, 1, 1)
    code = lib.exact_conv_rows(
        max(1, min(threads, n)), n, channels, oh, ow, _p(zc), _p(bias), _p(babs), _p(sq_src),
        h, wd, *ksize, *conv_geo, norm_margin, _p(wn), _p(dec2), c2, h2, w2d, *s2, off2,
        _p(w2), int(dec2.shape[0] > 0), _p(theta), _p(g), e, pad.size - 2, _p(pad), _p(tabk),
        _p(phk), _p(phase), _p(dec), _p(sq), _p(fired), _p(nflag), _p(sp),
        _p(x64) if x64.shape[0] else None, w64.shape[3], _p(table64), _p(w64), _p(sp2),
        _p(table2_64), _p(w2_64), _p(bias64), _p(theta64), _p(th64), int(conv_first),
    )  # fmt: skip
    if code:
        raise RuntimeError(f"native exact_conv_rows failed ({code}: out of memory)")
