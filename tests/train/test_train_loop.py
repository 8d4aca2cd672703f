"""The training loop: outputs of a run, exact resume, NaN detection, loss decrease."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
import torch
from boxseg.train.checkpoint import CheckpointError, load_checkpoint
from boxseg.train.config import load_config
from boxseg.train.loop import Method, Trainer, TrainingDiverged


def _losses(path) -> list[dict]:
    """The loss records of metrics.jsonl (evaluation records and timings left out)."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "time_per_iter"} for r in rows if "eval" not in r]


def test_run_writes_checkpoint_metrics_config_and_evaluates(tmp_path, make_cfg, capsys):
    cfg = make_cfg(tmp_path / "run", "solver.max_iter=3", "runtime.checkpoint_every=2", "runtime.eval_every=2",
                   "runtime.tensorboard=true", "runtime.progress=true", val=True)
    summary = Trainer(cfg).train()
    err = capsys.readouterr().err
    assert "3/3" in err and "it/s" in err and "loss_cls=" in err and "lr=" in err  # the progress bar
    if importlib.util.find_spec("tensorboard") is None:
        assert "tensorboard package is not installed" in err
    else:
        assert any((tmp_path / "run" / "tensorboard").iterdir())
    run = tmp_path / "run"
    ck = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ck["iteration"] == 3 and ck["class_names"] == ["ellipse", "star", "blob", "ring"]
    assert ck["config"]["model"]["num_classes"] == 4 and ck["optimizer"] is not None
    assert load_config(None, run / "config.yaml").solver.max_iter == 3  # the resolved config, reloadable
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "eval" not in r]
    assert [r["iteration"] for r in train_rows] == [1, 2, 3]
    assert {"lr", "loss_cls", "loss_box", "loss_ctr", "loss_proj", "loss_pair", "total", "time_per_iter"} <= set(
        train_rows[0])
    assert train_rows[0]["lr"] < train_rows[2]["lr"]  # warm-up
    evals = [r for r in rows if "eval" in r]
    assert [r["iteration"] for r in evals] == [2, 3]  # every 2 iterations and at the end
    assert set(evals[-1]["eval"]) == {"segm", "bbox"} and "AP" in evals[-1]["eval"]["segm"]
    assert summary["eval"] == evals[-1]["eval"] and summary["final_losses"]["total"] == train_rows[-1]["total"]


class _CrashAt(Method):
    crash_at = 4

    def prepare_batch(self, batch, iteration):
        if iteration == self.crash_at:
            raise KeyboardInterrupt("simulated kill")
        return batch


def test_resume_reproduces_the_uninterrupted_loss_sequence(tmp_path, make_cfg):
    overrides = ("solver.max_iter=6", "runtime.checkpoint_every=3", "solver.warmup_iters=3", "solver.steps=[4]",
                 "input.train_scales=[48, 64]", "input.hflip_prob=0.5")
    straight = Trainer(make_cfg(tmp_path / "a", *overrides))
    straight.train()

    crashed = Trainer(make_cfg(tmp_path / "b", *overrides), method_factory=_CrashAt)
    with pytest.raises(KeyboardInterrupt):
        crashed.train()
    assert load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["iteration"] == 3
    resumed = Trainer(make_cfg(tmp_path / "b", *overrides), resume=True)
    resumed.train()

    assert crashed.history == straight.history[:4]  # it got through iterations 0..3 before the kill
    assert resumed.history == straight.history[3:]  # exactly the same floats, not just close
    assert _losses(tmp_path / "b" / "metrics.jsonl") == _losses(tmp_path / "a" / "metrics.jsonl")
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_another_model_is_refused(tmp_path, make_cfg):
    Trainer(make_cfg(tmp_path / "r", "solver.max_iter=1")).train()
    with pytest.raises(CheckpointError, match="another model:\n  model.fpn_channels: 32 in the checkpoint, 48"):
        Trainer(make_cfg(tmp_path / "r", "solver.max_iter=2", "model.fpn_channels=48"), resume=True).train()


def test_nan_loss_stops_naming_iteration_and_term_and_keeps_last_good_checkpoint(tmp_path, make_cfg):
    from boxseg.train.losses.criterion import Criterion

    class NaNAt3(Criterion):
        def __call__(self, dense, model, batch, iteration):
            losses = super().__call__(dense, model, batch, iteration)
            if iteration == 3:
                losses["loss_box"] = losses["loss_box"] * float("nan")
            return losses

    cfg = make_cfg(tmp_path / "n", "solver.max_iter=6", "runtime.checkpoint_every=2")
    trainer = Trainer(cfg, criterion_factory=lambda c: NaNAt3(c.loss, c.model))
    ckpt = tmp_path / "n" / "checkpoints" / "last.pt"
    with pytest.raises(TrainingDiverged) as err:
        trainer.train()
    assert err.value.iteration == 3 and err.value.term == "loss_box"
    assert "iteration 3" in str(err.value) and "'loss_box' is nan" in str(err.value) and str(ckpt) in str(err.value)
    good = load_checkpoint(ckpt)
    assert good["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in good["model"].values() if v.is_floating_point())


def test_short_training_lowers_the_loss(tmp_path, make_cfg, synth_dataset):
    """A fast overfit on two images: the mean loss of the last iterations is clearly below the first ones."""
    two = synth_dataset(tmp_path / "two", 2, 64, seed=2)
    cfg = make_cfg(tmp_path / "o", f"data.train_dir={two}", "solver.max_iter=30", "solver.lr=0.02",
                   "solver.warmup_iters=5", "input.hflip_prob=0.0", "runtime.log_every=30",
                   "loss.pairwise_warmup_iters=1000")  # pairwise term nearly off: it fights memorising early
    trainer = Trainer(cfg)
    trainer.train()
    totals = [h["total"] for h in trainer.history]
    first, last = sum(totals[:5]) / 5, sum(totals[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    for term in ("loss_cls", "loss_box", "loss_proj"):
        assert sum(h[term] for h in trainer.history[-5:]) < sum(h[term] for h in trainer.history[:5]), term


@pytest.mark.slow
def test_overfit_beats_the_box_fill_baseline(tmp_path, make_cfg, synth_dataset):
    """BoxInst on 8 images of 128 px, evaluated on the same images: losses fall and mask AP ends above the
    box-fill baseline (GT boxes filled, perfect detection), i.e. the masks learned more than the boxes.
    About 100 s of CPU on one thread."""
    from boxseg.train.evaluate import evaluate_model

    from boxseg.data.coco import CocoDataset
    from boxseg.eval.baselines import baseline_results
    from boxseg.eval.coco_eval import evaluate

    data = synth_dataset(tmp_path / "d", 8, 128, seed=3)
    cfg = make_cfg(tmp_path / "run", f"data.train_dir={data}", "solver.max_iter=800", "solver.ims_per_batch=4",
                   "solver.lr=0.01", "solver.warmup_iters=20", "solver.steps=[650]", "input.hflip_prob=0.5",
                   "loss.pairwise_warmup_iters=300", "runtime.log_every=50", size=128)
    trainer = Trainer(cfg)
    trainer.train()
    totals = [h["total"] for h in trainer.history]
    assert sum(totals[-50:]) / 50 < 0.6 * sum(totals[:50]) / 50
    for term in ("loss_proj", "loss_box"):
        assert trainer.history[-1][term] < trainer.history[0][term]
    ds = CocoDataset(data)
    ours = evaluate_model(trainer.model, ds, "cpu", batch_size=4, score_thr=0.05, input_cfg=cfg.input)
    box_fill = evaluate(ds.ann_file, baseline_results(ds.ann_file, "box-fill"))
    assert ours["segm"]["AP"] > box_fill["segm"]["AP"] + 2.0, (ours["segm"], box_fill["segm"])


@pytest.mark.cuda
def test_amp_on_cuda_trains_and_resumes(tmp_path, make_cfg):
    cfg = make_cfg(tmp_path / "g", "runtime.device=cuda", "solver.amp=true", "solver.max_iter=3",
                   "runtime.checkpoint_every=2", "data.workers=2")
    first = Trainer(cfg)
    first.train()
    ck = load_checkpoint(tmp_path / "g" / "checkpoints" / "last.pt")
    assert ck["scaler"] is not None and ck["iteration"] == 3
    assert all(math.isfinite(v) for h in first.history for v in h.values())
    more = Trainer(make_cfg(tmp_path / "g", "runtime.device=cuda", "solver.amp=true", "solver.max_iter=5"),
                   resume=True)
    more.train()
    assert len(more.history) == 2
