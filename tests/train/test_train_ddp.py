"""DDP under torchrun with the gloo backend on CPU: 2 processes x 2 images == 1 process x 4 images.

The BoxInst mask terms are normalised per process (a mean over each process's proposals), so with them the two
runs legitimately differ by the proposal-count imbalance between ranks. The equivalence check therefore zeroes
their weights (loss.proj_weight=0, loss.pairwise_weight=0): what remains (FCOS terms, whose normalisers are
all-reduced) must give the same parameters up to float summation order, which tests the engine's part: the
data split, gradient averaging, rank-0-only outputs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from boxseg.train.checkpoint import load_checkpoint

from boxseg.config import config_to_dict
from boxseg.model.config import ModelConfig


def _args(data, out: Path, batch: int, preset: str = "boxinst") -> list[str]:
    tiny, default = config_to_dict(ModelConfig.tiny(num_classes=4)), config_to_dict(ModelConfig())
    model = [f"model.{k}={json.dumps(v)}" for k, v in tiny.items() if v != default[k]]
    return ["train", "--preset", preset, "--data", str(data["train"]), "--out", str(out), "--iters", "3",
            "--batch", str(batch), "--device", "cpu", "--workers", "0", "--json", *model,
            "input.train_scales=[64]", "input.hflip_prob=0.5", "runtime.progress=false", "runtime.threads=1",
            "solver.warmup_iters=1", "solver.lr=0.01", "runtime.log_every=1",
            "loss.proj_weight=0", "loss.pairwise_weight=0"]


def _boxseg_exe() -> str:
    exe = Path(sys.executable).parent / "boxseg"
    if not exe.exists():
        pytest.skip(f"the boxseg console script is not installed next to {sys.executable}")
    return str(exe)


def _torchrun(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "--no-python", _boxseg_exe(), *args],
                          capture_output=True, text=True, env=env, timeout=600, check=False)


def test_two_gloo_processes_match_one_process_with_the_same_total_batch(tmp_path, tiny_data):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([_boxseg_exe(), *_args(tiny_data, tmp_path / "single", 4)], capture_output=True,
                            text=True, env=env, timeout=600, check=False)
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = _torchrun(_args(tiny_data, tmp_path / "ddp", 4), env)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    # Only rank 0 prints the summary and writes the run folder.
    assert len([ln for ln in ddp.stdout.splitlines() if ln.startswith("{")]) == 1
    a = load_checkpoint(tmp_path / "single" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.pt")
    assert a["iteration"] == b["iteration"] == 3
    for k, va in a["model"].items():
        torch.testing.assert_close(b["model"][k], va, rtol=1e-4, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}")
    la = [json.loads(x) for x in (tmp_path / "single" / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in lb] == [1, 2, 3]
    for ra, rb in zip(la, lb):  # logged losses are averaged over the ranks
        assert rb["loss_box"] == pytest.approx(ra["loss_box"], rel=1e-4)
        assert rb["lr"] == ra["lr"]


def test_sim_trains_under_two_gloo_processes(tmp_path, tiny_data):
    """SIM syncs its prototypes across ranks every iteration (a collective each rank must reach in step)."""
    ddp = _torchrun(_args(tiny_data, tmp_path / "sim", 4, preset="sim"), {**os.environ, "OMP_NUM_THREADS": "1"})
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    state = load_checkpoint(tmp_path / "sim" / "checkpoints" / "last.pt")
    assert state["iteration"] == 3
    assert "protos" in state["method"]["sim_prototypes"]
