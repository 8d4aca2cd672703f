"""Build, dispatch and fallback behaviour of boxseg.ops, and the nvcc compile check of the CUDA sources."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from boxseg import ops
from boxseg.ops import _build, library
from boxseg.ops import reference as R

CSRC = Path(_build.__file__).parent / "csrc"


def _inputs():
    gen = torch.Generator().manual_seed(0)
    boxes = torch.rand(50, 4, generator=gen) * 50
    boxes[:, 2:] += boxes[:, :2]
    return boxes, torch.rand(50, generator=gen), torch.randint(0, 3, (50,), generator=gen)


def test_public_ops_use_the_kernels_when_built(fused_cpu, monkeypatch) -> None:
    monkeypatch.delenv("BOXSEG_OPS", raising=False)
    calls = []
    real = library.batched_nms
    monkeypatch.setattr(library, "batched_nms", lambda *a: calls.append(1) or real(*a))
    boxes, scores, cls = _inputs()
    assert torch.equal(ops.batched_nms(boxes, scores, cls, 0.5), R.batched_nms(boxes, scores, cls, 0.5))
    assert calls == [1]
    # float16 runs in float32 through the kernel; integer boxes have no kernel: the reference runs.
    ops.batched_nms(boxes.half(), scores, cls, 0.5)
    assert calls == [1, 1]
    # uint8 images are converted to float first; half-precision logits give a float32 loss and a half gradient.
    img = (torch.rand(1, 3, 9, 10) * 255).to(torch.uint8)
    sim = ops.color_similarity(img)
    torch.testing.assert_close(sim, R.color_similarity(img.float()), atol=3e-4, rtol=1e-4)
    z = torch.randn(2, 9, 10).half().requires_grad_()
    loss = ops.pairwise_affinity_loss(z, sim, torch.tensor([0, 0]), torch.tensor([[0.0, 0, 10, 9]] * 2))
    loss.backward()
    assert loss.dtype == torch.float32 and z.grad.dtype == torch.float16
    ref = R.pairwise_affinity_loss(z.detach().float(), sim, torch.tensor([0, 0]), torch.tensor([[0.0, 0, 10, 9]] * 2))
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)


def test_reference_mode_never_touches_the_kernels(monkeypatch) -> None:
    monkeypatch.setenv("BOXSEG_OPS", "reference")

    def boom(*args):
        raise AssertionError("kernel called in reference mode")

    for name in ("batched_nms", "pairwise_affinity_loss", "fuse_candidate_masks", "color_similarity"):
        monkeypatch.setattr(library, name, boom)
    boxes, scores, cls = _inputs()
    assert torch.equal(ops.batched_nms(boxes, scores, cls, 0.5), R.batched_nms(boxes, scores, cls, 0.5))
    sim = ops.color_similarity(torch.rand(1, 3, 6, 6) * 255)
    z = torch.randn(2, 6, 6, requires_grad=True)
    ops.pairwise_affinity_loss(z, sim, torch.tensor([0, 0]), torch.tensor([[0.0, 0, 6, 6]] * 2)).backward()
    assert z.grad is not None


def test_failed_build_warns_once_and_falls_back(monkeypatch) -> None:
    monkeypatch.delenv("BOXSEG_OPS", raising=False)
    monkeypatch.setattr(_build, "_state", {})
    monkeypatch.setattr(_build, "_warned", set())

    def fail(kind: str) -> None:
        raise OSError("simulated: compiler crashed")

    monkeypatch.setattr(_build, "_compile", fail)
    boxes, scores, cls = _inputs()
    with pytest.warns(RuntimeWarning, match="falls back to the pure-PyTorch references"):
        got = ops.batched_nms(boxes, scores, cls, 0.5)
    assert torch.equal(got, R.batched_nms(boxes, scores, cls, 0.5))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ops.batched_nms(boxes, scores, cls, 0.5)  # no second warning
    monkeypatch.setenv("BOXSEG_OPS", "fused")
    monkeypatch.setattr(_build, "_warned", set())
    with pytest.raises(_build.BuildError, match="simulated"):
        ops.batched_nms(boxes, scores, cls, 0.5)


def test_missing_compiler_is_reported(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("BOXSEG_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", "no-such-compiler-boxseg")
    monkeypatch.setattr(_build, "_state", {})
    with pytest.raises(_build.BuildError, match="no C\\+\\+ compiler"):
        _build.ensure("cpu")
    assert _build.cache_dir("cpu").is_relative_to(tmp_path / "ops")
    assert torch.__version__ in str(_build.cache_dir("cpu"))


def test_bad_mode_is_rejected(monkeypatch) -> None:
    monkeypatch.setenv("BOXSEG_OPS", "fast")
    with pytest.raises(ValueError, match="BOXSEG_OPS"):
        _build.mode()


def test_cuda_kernel_sources_are_torch_free() -> None:
    torch_free = [*CSRC.glob("*.h"), *CSRC.glob("cuda/*.cu"), *CSRC.glob("cuda/*.cuh"), CSRC / "cuda/launchers.h"]
    torch_free.remove(CSRC / "binding_checks.h")  # used by the bindings only
    for path in torch_free:
        includes = re.findall(r'#include [<"]([^>"]+)[>"]', path.read_text())
        assert not [i for i in includes if i.split("/")[0] in ("torch", "ATen", "c10")], path


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")
def test_nvcc_compiles_cuda_kernels(tmp_path) -> None:
    sources = sorted(str(p) for p in CSRC.glob("cuda/*.cu"))
    assert len(sources) == 4
    cmd = ["nvcc", "-std=c++17", "-O1", "--fmad=false", "-arch=sm_80", "-I", str(CSRC), "-c", *sources,
           "--output-directory", str(tmp_path)]
    result = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert len(list(tmp_path.glob("*.o"))) == 4
