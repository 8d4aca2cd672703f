"""`boxseg bench ops --quick`: the report is written and the fused results agree with the references."""

from __future__ import annotations

import json

import pytest
import torch
from boxseg.bench import ops as bench_ops
from click.testing import CliRunner

pytestmark = pytest.mark.usefixtures("fused_cpu")


def test_quick_run_writes_report(tmp_path) -> None:
    result = CliRunner().invoke(bench_ops.cli, ["--quick", "--warmup", "0", "--threads", "1", "--json",
                                                "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout.strip().splitlines()[-1])
    rows = {row["op"]: row for row in doc["rows"]}
    assert set(rows) == {"pairwise fwd+bwd", "color similarity", "fusion (QMF+MQS)", "batched_nms"}
    for row in rows.values():
        assert row["runs"] == 10 and row["reference_ms"] > 0 and row["fused_ms"] > 0
        assert row["fused_peak_mib"] >= 0 and row["reference_peak_mib"] > 0
    assert rows["pairwise fwd+bwd"]["max_abs_diff"] < 1e-4
    assert rows["fusion (QMF+MQS)"]["max_abs_diff"] < 1e-4
    assert rows["batched_nms"]["max_abs_diff"] == 0
    for ext in ("json", "csv", "md", "png"):
        assert (tmp_path / f"ops.{ext}").is_file()


def test_peak_memory_counts_live_tensors() -> None:
    def two_then_one() -> torch.Tensor:
        a = torch.ones(1024, 1024)  # 4 MiB
        b = a * 2  # 4 MiB more, both alive
        del a
        return b.sum()

    peak = bench_ops.peak_tensor_mib(two_then_one, torch.device("cpu"))
    assert 7.9 < peak < 8.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_unfold_baseline_equals_reference_and_fused(seed: int) -> None:
    """The peers' formulation `bench ops` times is the same quantity as our reference and the fused op: loss and
    gradient, on random inputs with boxes crossing the borders, 1-pixel boxes and saturated logits."""
    from ops_testdata import random_boxes, smooth_images

    from boxseg.ops import library
    from boxseg.ops import reference as R

    gen = torch.Generator().manual_seed(100 + seed)
    b, n, h, w = 2, 6, 19, 26
    for k, d in [(3, 2), (5, 1)]:
        sim = R.color_similarity(smooth_images(b, h, w, gen), kernel_size=k, dilation=d)
        z = torch.randn(n, h, w, generator=gen, dtype=torch.float64) * 4
        z[0] = torch.sign(z[0]) * 80  # P_same ~ e^-160 across sign changes
        idx = torch.randint(0, b, (n,), generator=gen)
        boxes = random_boxes(n, h, w, gen)
        boxes[1] = torch.tensor([3.2, 4.1, 3.8, 4.9])  # one pixel: (4, 3)
        boxes[2] = torch.tensor([-3.0, -3.0, w + 3.0, h + 3.0])  # the whole grid
        results = []
        for fn in (bench_ops.unfold_pairwise_loss, R.pairwise_affinity_loss,
                   lambda *a: library.pairwise_affinity_loss(*a, True)[0]):
            zz = z.clone().requires_grad_()
            loss = fn(zz, sim, idx, boxes, 0.3, d)
            (grad,) = torch.autograd.grad(loss, zz)
            results.append((loss.detach(), grad))
        (lu, gu), (lr, gr), (lf, gf) = results
        scale = float(lr.abs()) + 1.0  # float64 sums of O(1e3) terms: relative 1e-12 of the loss's size
        assert float((lu - lr).abs()) < 1e-12 * scale and float((lf - lr).abs()) < 1e-12 * scale
        gscale = float(gr.abs().max()) + 1e-300
        torch.testing.assert_close(gu, gr, atol=1e-12 * gscale, rtol=1e-10)
        torch.testing.assert_close(gf, gr, atol=1e-12 * gscale, rtol=1e-10)
        assert float(lr) > 0


def test_pairwise_work_counts_match_the_op() -> None:
    """`pairwise_work` (the roofline's pair count) agrees with the op's own triple count and a direct loop."""
    from ops_testdata import random_boxes, smooth_images

    from boxseg.ops import library
    from boxseg.ops import reference as R

    gen = torch.Generator().manual_seed(7)
    h, w = 11, 14
    sim = R.color_similarity(smooth_images(2, h, w, gen))
    idx = torch.tensor([0, 1, 1])
    boxes = random_boxes(3, h, w, gen)
    work = bench_ops.pairwise_work(sim, idx, boxes, 0.3, 2)
    _, count, _ = library.pairwise_affinity_loss(torch.zeros(3, h, w, dtype=torch.float64), sim, idx, boxes, 0.3,
                                                2)
    assert work["triples"] == int(count)
    inside = R.box_masks(boxes, h, w).tolist()
    pairs = set()
    for i in range(3):
        for y in range(h):
            for x in range(w):
                for dy, dx in R.neighbour_offsets(3, 2):
                    ny, nx = y + dy, x + dx
                    if 0 <= ny < h and 0 <= nx < w and (inside[i][y][x] or inside[i][ny][nx]):
                        pairs.add((i, frozenset({(y, x), (ny, nx)})))
    assert work["pairs_evaluated"] == len(pairs)
