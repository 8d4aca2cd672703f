"""Just-in-time build of the C++ (and, where torch has CUDA, CUDA) kernels of `boxseg.ops`.

Nothing is compiled at install time (pip's build isolation has no torch). On first use the sources in `csrc/` are
compiled with `torch.utils.cpp_extension.load` into a cache folder keyed by the torch version and a hash of the
sources and flags: `$BOXSEG_CACHE/ops/<key>` or `~/.cache/boxseg/ops/<key>`. A file lock keeps two processes from
building at once; one line goes to stderr while compiling. Later processes only load the cached library.

Environment:
- `BOXSEG_OPS=reference`: never build or load; every op uses its pure-PyTorch reference.
- `BOXSEG_OPS=fused`: a failed build raises instead of falling back (CI uses this to be sure kernels are tested).
Without it, a failed build (e.g. no C++ compiler) warns once and the references are used.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

CSRC = Path(__file__).resolve().parent / "csrc"
_CPU_SOURCES = ["cpu/registration.cpp", "cpu/pairwise_cpu.cpp", "cpu/color_cpu.cpp", "cpu/fusion_cpu.cpp",
                "cpu/nms_cpu.cpp"]
_CUDA_SOURCES = ["cuda/binding_cuda.cpp", "cuda/pairwise_cuda.cu", "cuda/color_cuda.cu", "cuda/fusion_cuda.cu",
                 "cuda/nms_cuda.cu"]
# -ffp-contract=off / --fmad=false: no fused multiply-add, so box IoU rounds exactly like the reference.
# -fno-trapping-math: nothing reads floating-point exception flags; it lets gcc turn compare-and-select into vector
# blends (the pairwise pair loop only vectorises with it). Results are unchanged: it allows no value-changing rewrite.
_CFLAGS = ["-O3", "-fopenmp", "-ffp-contract=off", "-fno-trapping-math"]
_LDFLAGS = ["-fopenmp"]
_NVCC_FLAGS = ["-O3", "--fmad=false"]

_lock = threading.Lock()
_state: dict[str, bool] = {}  # "cpu"/"cuda" -> loaded
_warned: set[str] = set()


class BuildError(RuntimeError):
    """The kernels could not be compiled or loaded."""


def mode() -> str:
    """`auto` (default), `reference` or `fused`, from $BOXSEG_OPS."""
    value = os.environ.get("BOXSEG_OPS", "auto").strip().lower() or "auto"
    if value not in ("auto", "reference", "fused"):
        raise ValueError(f"BOXSEG_OPS: expected one of auto, reference, fused; got {value!r}")
    return value


def _source_files(kind: str) -> list[Path]:
    names = _CPU_SOURCES if kind == "cpu" else _CUDA_SOURCES
    headers = sorted(CSRC.glob("*.h")) + sorted(CSRC.glob("cpu/*.h"))
    if kind == "cuda":
        headers += sorted(CSRC.glob("cuda/*.h")) + sorted(CSRC.glob("cuda/*.cuh"))
    return [CSRC / n for n in names] + headers


def cache_dir(kind: str) -> Path:
    """Build folder for `kind` ("cpu" or "cuda"): the key changes whenever a source, a flag or torch changes."""
    digest = hashlib.sha256()
    for path in _source_files(kind):
        digest.update(path.relative_to(CSRC).as_posix().encode())
        digest.update(path.read_bytes())
    digest.update(" ".join(_CFLAGS + _LDFLAGS + _NVCC_FLAGS).encode())
    digest.update(f"{sys.version_info[:2]}{torch.version.cuda}".encode())
    root = Path(os.environ["BOXSEG_CACHE"]) / "ops" if os.environ.get("BOXSEG_CACHE") else (
        Path.home() / ".cache" / "boxseg" / "ops")
    return root / f"{torch.__version__}-{digest.hexdigest()[:16]}" / kind


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _compile(kind: str) -> None:
    from torch.utils import cpp_extension

    name = f"boxseg_ops_{kind}"
    build = cache_dir(kind)
    library = build / f"{name}.so"
    with _file_lock(build.parent / f"{kind}.lock"):
        if not library.exists():
            if shutil.which(os.environ.get("CXX", "c++")) is None:
                raise BuildError(f"no C++ compiler found (looked for {os.environ.get('CXX', 'c++')!r} on PATH)")
            build.mkdir(parents=True, exist_ok=True)
            print(f"boxseg.ops: compiling the {kind.upper()} kernels into {build} (first use only, about a minute)",
                  file=sys.stderr, flush=True)
            sources = [str(CSRC / n) for n in (_CPU_SOURCES if kind == "cpu" else _CUDA_SOURCES)]
            cpp_extension.load(
                name=name,
                sources=sources,
                extra_cflags=_CFLAGS,
                extra_ldflags=_LDFLAGS,
                extra_cuda_cflags=_NVCC_FLAGS,
                extra_include_paths=[str(CSRC)],
                build_directory=str(build),
                is_python_module=False,
                verbose=False,
            )
            return  # load() also loaded the library into this process
    torch.ops.load_library(str(library))


def ensure(kind: str = "cpu") -> None:
    """Build (if needed) and load the `kind` kernels; raises BuildError on failure."""
    with _lock:
        if _state.get(kind):
            return
        if kind == "cuda":
            if torch.version.cuda is None or not torch.cuda.is_available():
                raise BuildError("the CUDA kernels need a CUDA build of torch and a visible GPU")
            if not _state.get("cpu"):
                _compile_checked("cpu")  # the CPU library defines the op schemas the CUDA library implements
                _state["cpu"] = True
        _compile_checked(kind)
        _state[kind] = True


def _compile_checked(kind: str) -> None:
    try:
        _compile(kind)
    except BuildError:
        raise
    except Exception as exc:  # compiler errors surface as RuntimeError/CalledProcessError/OSError
        raise BuildError(f"building the boxseg.ops {kind} kernels failed: {exc}") from exc


def available(device: torch.device | str) -> bool:
    """True when the fused kernels can run on `device` (builds them on first call); False means use the reference."""
    kind = "cuda" if torch.device(device).type == "cuda" else "cpu"
    if torch.device(device).type not in ("cpu", "cuda"):
        return False
    current = mode()
    if current == "reference":
        return False
    if _state.get(kind):
        return True
    if kind in _warned:
        return False
    try:
        ensure(kind)
        return True
    except BuildError as exc:
        if current == "fused":
            raise
        _warned.add(kind)
        warnings.warn(f"{exc}; boxseg.ops falls back to the pure-PyTorch references on {kind}",
                      RuntimeWarning, stacklevel=3)
        return False
