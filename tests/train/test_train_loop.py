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
        return super().prepare_batch(batch, iteration)  # the photometric step every method applies


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


def _window_ratio(history: list[dict[str, float]], term: str, k: int) -> float:
    """Mean of `term` over the last k iterations divided by its mean over the first k."""
    return sum(h[term] for h in history[-k:]) / sum(h[term] for h in history[:k])


def test_short_training_lowers_the_loss(tmp_path, make_cfg, synth_dataset):
    """A fast overfit on two images: the loss of the last iterations is clearly below the first ones.

    Bounds sit well outside what was measured over seeds 0-5 at 1 thread and 0-2 at 2 threads (last/first 10
    iterations): total 0.53-0.81, loss_cls 0.59-0.72, loss_box 0.27-0.36. A CPU that rounds differently follows
    another trajectory, like another seed; loss_proj is left to the longer run (0.33-1.12 here)."""
    two = synth_dataset(tmp_path / "two", 2, 64, seed=2)
    cfg = make_cfg(tmp_path / "o", f"data.train_dir={two}", "solver.max_iter=60", "solver.lr=0.02",
                   "solver.warmup_iters=5", "input.hflip_prob=0.0", "runtime.log_every=60",
                   "loss.pairwise_warmup_iters=1000")  # pairwise term nearly off: it fights memorising early
    trainer = Trainer(cfg)
    trainer.train()
    ratios = {term: _window_ratio(trainer.history, term, 10) for term in ("total", "loss_cls", "loss_box")}
    assert ratios["total"] < 0.9 and ratios["loss_cls"] < 0.85 and ratios["loss_box"] < 0.6, ratios


@pytest.mark.parametrize("threads", [1, 2])
def test_a_fixed_seed_and_thread_count_give_the_same_run(tmp_path, make_cfg, threads):
    """Two runs with the same seed and thread count produce the same floats (losses and weights), random
    augmentation included: a learning result is reproducible on the machine that measured it."""
    overrides = ("solver.max_iter=6", "input.train_scales=[48, 64]", "input.hflip_prob=0.5", "runtime.seed=5",
                 f"runtime.threads={threads}")
    runs = [Trainer(make_cfg(tmp_path / name, *overrides)) for name in ("a", "b")]
    for run in runs:
        run.train()
    a, b = runs
    assert len(a.history) == 6 and a.history == b.history
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_overfit_beats_an_untrained_model(tmp_path, make_cfg, synth_dataset):
    """BoxInst overfits 4 images of 64 px (500 iterations, about 20 s on one thread), evaluated on the same images:
    the losses fall, and box and mask AP end far above those of the same model before training (same seed, so
    the same initial weights), evaluated the same way.

    Measured without photometric jitter over seeds 0-4 at 1 thread: bbox AP 39-73 (untrained <= 1.4), segm AP
    8.5-17.3 (untrained 0); the loss ratios are in the comment below. The AP margins are about a quarter of the
    smallest gap: another CPU rounds differently and follows another trajectory, which is what another seed does."""
    from boxseg.data.coco import CocoDataset
    from boxseg.eval.predict import evaluate_model
    from boxseg.model.condinst import CondInst

    data = synth_dataset(tmp_path / "d", 4, 64, seed=3)
    initial: dict[str, torch.Tensor] = {}

    def model_factory(cfg):  # the Trainer's own model, built after its seeding; its start weights kept aside
        model = CondInst(cfg.model)
        initial.update({k: v.clone() for k, v in model.state_dict().items()})
        return model

    # No photometric augmentation: an overfit test measures learning, not how random colour jitter of 4 images
    # happens to fall (the bounds below were not met under another jitter stream with the preset's strong setting).
    cfg = make_cfg(tmp_path / "run", f"data.train_dir={data}", "solver.max_iter=500", "solver.ims_per_batch=2",
                   "solver.lr=0.01", "solver.warmup_iters=10", "solver.steps=[400]", "runtime.log_every=500",
                   "student.color_jitter.p=0.0", "student.grayscale.p=0.0", "student.gaussian_blur.p=0.0")
    trainer = Trainer(cfg, model_factory=model_factory)
    trainer.train()
    ratios = {term: _window_ratio(trainer.history, term, 50)
              for term in ("total", "loss_cls", "loss_box", "loss_proj")}
    # Without jitter, seeds 0-4 at 1 thread gave last/first ratios total 0.57-0.84, loss_cls 0.25-0.76, loss_box
    # 0.06-0.60; loss_proj did not always fall over this window (up to 1.03), so the masks are judged by their AP.
    assert ratios["total"] < 0.95 and ratios["loss_cls"] < 0.9 and ratios["loss_box"] < 0.75, ratios

    untrained = CondInst(trainer.cfg.model)
    untrained.load_state_dict(initial)
    ds = CocoDataset(data)
    # score_thr=0: the untrained model's low scores still rank its detections, so its AP is not zero by default.
    ours, before = (evaluate_model(m, ds, "cpu", batch_size=4, score_thr=0.0, input_cfg=cfg.input)
                    for m in (trainer.model, untrained))
    assert ours["bbox"]["AP"] > before["bbox"]["AP"] + 15.0, (ours["bbox"], before["bbox"])
    assert ours["segm"]["AP"] > before["segm"]["AP"] + 2.0, (ours["segm"], before["segm"])


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
