"""SIM's prototypes under DDP: `Prototypes.sync` over two gloo processes (torchrun) gives both ranks the normalised
mean of the ranks' sub-centres, a class seen by one rank only takes that rank's, and outside a process group it is
a no-op."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import torch
import torch.nn.functional as F
from boxseg.train.pseudo.sim import Prototypes

_RANK_SCRIPT = textwrap.dedent("""
    import sys
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from boxseg.train.pseudo.sim import Prototypes

    dist.init_process_group("gloo")
    r = dist.get_rank()
    g = torch.Generator().manual_seed(int(sys.argv[2]) + r)
    p = Prototypes(num_classes=3, dim=4, per_class=2)
    # Class 0 on both ranks, class 1 on rank 0 only, class 2 on neither.
    classes = torch.tensor([0, 1]) if r == 0 else torch.tensor([0])
    fg = torch.rand(len(classes), 5, 6, generator=g) > 0.3
    for _ in range(2):  # the first update picks pixels, the second is a momentum step
        p.update(F.normalize(torch.randn(4, 5, 6, generator=g), dim=0), fg, classes, g)
    before = {k: v.clone() for k, v in p.state_dict().items()}
    p.sync()
    torch.save({"before": before, "after": p.state_dict()}, f"{sys.argv[1]}/rank{r}.pt")
    dist.destroy_process_group()
""")


def test_sync_without_a_process_group_changes_nothing() -> None:
    p = Prototypes(num_classes=2, dim=3, per_class=2)
    g = torch.Generator().manual_seed(0)
    p.update(F.normalize(torch.randn(3, 4, 4, generator=g), dim=0), torch.ones(1, 4, 4, dtype=torch.bool),
             torch.tensor([1]), g)
    before = {k: v.clone() for k, v in p.state_dict().items()}
    p.sync()
    for k, v in p.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_two_ranks_end_with_the_mean_of_their_prototypes(tmp_path) -> None:
    script = tmp_path / "rank.py"
    script.write_text(_RANK_SCRIPT)
    seed = int(torch.randint(0, 10_000, ()).item())
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script), str(tmp_path), str(seed)],
                         capture_output=True, text=True, env=env, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for k in ("protos", "ready"):
        assert torch.equal(r0["after"][k], r1["after"][k]), k
    b0, b1, after = r0["before"], r1["before"], r0["after"]
    assert b0["ready"].tolist() == [True, True, False] and b1["ready"].tolist() == [True, False, False]
    assert after["ready"].tolist() == [True, True, False]
    torch.testing.assert_close(after["protos"][0], F.normalize(b0["protos"][0] + b1["protos"][0], dim=1))
    torch.testing.assert_close(after["protos"][1], b0["protos"][1])  # only rank 0 has seen class 1
    assert torch.equal(after["protos"][2], torch.zeros_like(after["protos"][2]))
    torch.testing.assert_close(after["protos"].norm(dim=2)[:2], torch.ones(2, 2))
