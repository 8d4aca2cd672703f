"""The training loop: ``Trainer(cfg).train()``.

The loop knows nothing about the model's internals. What turns a batch into losses is a :class:`Method`; the
plain supervised method (presets ``boxinst`` and ``condinst``) is the default, and teacher-student training
plugs in by subclassing it and adding an entry to :data:`METHODS` (or passing ``method_factory``):

- ``prepare_batch(batch, it)``: before the loss (e.g. run the teacher, add pseudo masks, copy-paste);
- ``compute_losses(batch, it)``: forward the student and the criterion; returns weighted loss terms;
- ``after_step(it)``: after the optimizer step (e.g. the EMA update of the teacher);
- ``teacher`` (module or None), ``state_dict()`` / ``load_state_dict()``: extra state saved in checkpoints;
- ``student`` (trained and exported) and ``model_for_eval`` (what periodic evaluation runs).
"""

from __future__ import annotations

import copy
import json
import math
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from boxseg.train import distributed as D
from boxseg.train.checkpoint import (
    CheckpointError,
    capture_rng,
    check_same_model,
    load_checkpoint,
    load_model_weights,
    make_checkpoint,
    restore_rng,
    save_checkpoint,
)
from boxseg.train.config import ConfigError, TrainConfig, config_to_dict, reads_gt_masks, save_config
from boxseg.train.data import TrainDataset, batch_to_device, build_train_loader, default_workers
from boxseg.train.profile import stage
from boxseg.train.solver import build_optimizer, build_scheduler, validate_solver
from boxseg.train.telemetry import BAR as TELEMETRY_BAR
from boxseg.train.telemetry import window_mean
from torch import nn


class TrainingDiverged(RuntimeError):
    """A loss term became NaN or infinite. The last good checkpoint on disk is left untouched."""

    def __init__(self, iteration: int, term: str, value: float, last_checkpoint: Path | None) -> None:
        self.iteration, self.term, self.value, self.last_checkpoint = iteration, term, value, last_checkpoint
        where = f"; last good checkpoint: {last_checkpoint}" if last_checkpoint else "; no checkpoint was written"
        super().__init__(f"training diverged at iteration {iteration}: loss term '{term}' is {value}{where}")


# ---------------------------------------------------------------------------------------------- methods


class Method:
    """Plain supervised training: student forward + criterion. Base class of teacher-student methods.

    The student's photometric augmentation (``cfg.student``) applies here too, so that every preset of a
    comparison (BoxInst and CondInst included) sees the same student input; the pairwise colour term reads the
    pixels before it (``color_images``), as in the teacher-student method.
    """

    # True: batches carry ``orig_images`` (uint8, un-augmented) for methods that make another view (teacher).
    needs_original_images: bool = False
    # True: the method measures its pseudo masks against the dataset's GT masks when it has them (telemetry only).
    uses_gt_mask_telemetry: bool = False

    def __init__(self, cfg: TrainConfig, student: nn.Module, criterion: Callable[..., dict[str, torch.Tensor]]):
        from boxseg.train.photometric import StudentPhotometric

        self.cfg = cfg
        self.student = student
        self.criterion = criterion
        self.teacher: nn.Module | None = None
        # The callable used for the student's forward pass; the Trainer swaps in the DDP wrapper under torchrun.
        self.forward_student: Callable[[torch.Tensor], Any] = student
        self.photometric = StudentPhotometric(cfg.student)

    def prepare_batch(self, batch: dict[str, Any], iteration: int) -> dict[str, Any]:
        aug = self.cfg.student
        if max(aug.color_jitter.p, aug.grayscale.p, aug.gaussian_blur.p) <= 0:
            return batch
        out = dict(batch)
        out["color_images"] = batch["images"]
        with stage("augment"):
            out["images"] = self.photometric.apply_batch(batch["images"], batch["image_sizes"],
                                                         self.photometric_generators(batch, iteration))
        return out

    def photometric_generators(self, batch: dict[str, Any], iteration: int) -> list[torch.Generator]:
        """One generator per image, keyed by (seed, iteration, image id): every method draws the same jitter for an
        image (runs of two presets with one seed then differ only in the method), and a batch split over DDP
        processes draws what one process would."""
        seed = self.cfg.runtime.seed
        return [torch.Generator().manual_seed(mix_seed(seed, iteration, int(image_id), 0xC0105))
                for image_id in batch["image_ids"]]

    def telemetry(self) -> dict[str, float]:
        """Per-iteration statistics of what the method did (pseudo labels, bank, pastes); none for plain training."""
        return {}

    def compute_losses(self, batch: dict[str, Any], iteration: int) -> dict[str, torch.Tensor]:
        with stage("student_forward"):
            dense = self.forward_student(batch["images"])
        return self.criterion(dense, self.student, batch, iteration)

    def after_step(self, iteration: int) -> None:
        pass

    @property
    def model_for_eval(self) -> nn.Module:
        return self.student

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


MethodFactory = Callable[[TrainConfig, nn.Module, Callable[..., dict[str, torch.Tensor]]], Method]

# cfg.method -> factory. A method defined elsewhere adds itself here when its module is imported; the modules
# below are imported on first use of their method name, so `method: teacher_student` in a YAML file just works.
METHODS: dict[str, MethodFactory] = {"supervised": Method}
METHOD_MODULES: dict[str, str] = {"teacher_student": "boxseg.train.teacher_student"}


def build_method(cfg: TrainConfig, student: nn.Module, criterion: Any) -> Method:
    if cfg.method not in METHODS and cfg.method in METHOD_MODULES:
        import importlib

        importlib.import_module(METHOD_MODULES[cfg.method])
    if cfg.method not in METHODS:
        import difflib

        close = difflib.get_close_matches(cfg.method, list(METHODS) + list(METHOD_MODULES), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        known = ", ".join(sorted(set(METHODS) | set(METHOD_MODULES)))
        raise ConfigError(f"method: unknown training method '{cfg.method}' (known: {known}){hint}")
    return METHODS[cfg.method](cfg, student, criterion)


# ---------------------------------------------------------------------------------------------- helpers


def mix_seed(*values: int) -> int:
    """A seed from integers (numpy SeedSequence hashing): the per-iteration random streams of the methods."""
    return int(np.random.SeedSequence([int(v) & 0xFFFFFFFF for v in values]).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def open_dataset(path: str, with_masks: bool) -> Any:
    from boxseg.data.coco import CocoDataset

    if not path:
        raise ConfigError("data.train_dir is not set (boxseg train --data DIR)")
    return CocoDataset(path, with_masks=with_masks)


class MetricsWriter:
    """``metrics.jsonl`` (one object per line) and, when asked and installed, TensorBoard scalars."""

    def __init__(self, out_dir: Path, tensorboard: bool, resume_from: int | None) -> None:
        self.path = out_dir / "metrics.jsonl"
        if resume_from is not None and self.path.exists():
            # Drop records past the checkpoint so the resumed run's lines are not interleaved with stale ones.
            kept = [ln for ln in self.path.read_text().splitlines() if _iteration_of(ln) <= resume_from]
            self.path.write_text("".join(ln + "\n" for ln in kept))
        elif resume_from is None:
            self.path.write_text("")
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out_dir / "tensorboard"))
            except ImportError:
                print("boxseg train: runtime.tensorboard=true but the tensorboard package is not installed; "
                      "writing metrics.jsonl only", file=sys.stderr)

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            it = record["iteration"]
            for k, v in _flatten(record).items():
                if k != "iteration" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, it)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _iteration_of(line: str) -> int:
    try:
        return int(json.loads(line).get("iteration", 0))
    except (ValueError, AttributeError):
        return 0


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


# ---------------------------------------------------------------------------------------------- trainer


class Trainer:
    """Builds everything from a :class:`TrainConfig` and runs ``solver.max_iter`` iterations.

    ``resume=True`` continues from ``RUN/checkpoints/last.pt`` when it exists: model, optimizer, scheduler,
    method state, iteration and RNG states are restored, and the sampler restarts at that iteration, so the loss
    sequence equals an uninterrupted run's.
    """

    def __init__(self, cfg: TrainConfig, resume: bool = False, method_factory: MethodFactory | None = None,
                 model_factory: Callable[[TrainConfig], nn.Module] | None = None,
                 criterion_factory: Callable[[TrainConfig], Any] | None = None) -> None:
        if not cfg.runtime.out_dir:
            raise ConfigError("runtime.out_dir is not set (boxseg train --out RUN)")
        validate_solver(cfg.solver)
        self.cfg = copy.deepcopy(cfg)  # set-up fills in dataset-derived values (num_classes)
        cfg = self.cfg
        self.resume = resume
        self.method_factory = method_factory
        self.model_factory = model_factory or _default_model
        self.criterion_factory = criterion_factory or _default_criterion
        self.out_dir = Path(cfg.runtime.out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.history: list[dict[str, float]] = []  # per-iteration loss terms of this process (tests, summary)
        self.last_checkpoint: Path | None = None
        self.last_eval: dict[str, Any] | None = None
        self.last_telemetry: dict[str, float] = {}
        self.telemetry_summary: dict[str, float | None] | None = None  # the last log window's telemetry

    # ------------------------------------------------------------------ set-up
    def _setup(self) -> None:
        cfg = self.cfg
        self.dist = D.init_distributed(cfg.runtime.device)
        self.device = D.resolve_device(cfg.runtime.device, self.dist)
        if cfg.runtime.threads > 0:
            torch.set_num_threads(cfg.runtime.threads)
        seed_everything(cfg.runtime.seed)

        self.train_set = open_dataset(cfg.data.train_dir, with_masks=reads_gt_masks(cfg))
        self.class_names = list(self.train_set.class_names)
        if cfg.model.num_classes != len(self.class_names):
            # The dataset decides the number of classes; recorded in the saved config.
            if self.dist.is_main and cfg.model.num_classes != type(cfg.model)().num_classes:
                print(f"boxseg train: model.num_classes={cfg.model.num_classes} replaced by the dataset's "
                      f"{len(self.class_names)} classes", file=sys.stderr)
            cfg.model.num_classes = len(self.class_names)

        self.model = self.model_factory(cfg).to(self.device)
        self.criterion = self.criterion_factory(cfg)
        factory = self.method_factory or (lambda c, m, crit: build_method(c, m, crit))
        self.method = factory(cfg, self.model, self.criterion)
        self.method.forward_student = D.wrap_model(self.model, self.dist, self.device)
        # GT masks only for the method's telemetry (pseudo-mask IoU); the method drops them before any loss.
        load_masks = reads_gt_masks(cfg) or (self.method.uses_gt_mask_telemetry and cfg.runtime.telemetry_gt_masks
                                             and self.train_set.has_masks())
        self.train_set.with_masks = load_masks

        self.optimizer = build_optimizer(self.model, cfg.solver)
        self.scheduler = build_scheduler(self.optimizer, cfg.solver)
        self.use_amp = cfg.solver.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)

        self.start_iter = 0
        ckpt_path = self.ckpt_dir / "last.pt"
        rng_state = None
        if self.resume and ckpt_path.exists():
            rng_state = self._load_for_resume(ckpt_path)
        elif self.resume and self.dist.is_main:
            print(f"boxseg train: --resume given but {ckpt_path} does not exist; starting from iteration 0",
                  file=sys.stderr)

        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out_dir / "config.yaml")
            self.metrics = MetricsWriter(self.out_dir, cfg.runtime.tensorboard,
                                         self.start_iter if self.start_iter > 0 else None)

        workers = cfg.data.workers if cfg.data.workers >= 0 else default_workers(self.device.type)
        dataset = TrainDataset(self.train_set, cfg.input, with_masks=load_masks,
                               keep_original=self.method.needs_original_images)
        self.loader = build_train_loader(
            dataset, cfg.solver.ims_per_batch, cfg.runtime.seed, self.start_iter,
            self.dist.rank, self.dist.world_size, workers, pin_memory=self.device.type == "cuda",
        )
        self.val_set = None
        if cfg.data.val_dir and self.dist.is_main:
            from boxseg.data.coco import CocoDataset

            self.val_set = CocoDataset(cfg.data.val_dir, with_masks=True)
        # Restored last: nothing above may draw from the global generators after this point.
        if rng_state is not None:
            restore_rng(rng_state)

    def _load_for_resume(self, path: Path) -> dict[str, Any] | None:
        ckpt = load_checkpoint(path, map_location=self.device)
        check_same_model(ckpt, config_to_dict(self.cfg.model), path)
        if list(ckpt["class_names"]) != self.class_names:
            raise CheckpointError(f"checkpoint {path} was trained on classes {ckpt['class_names']}, but "
                                  f"{self.cfg.data.train_dir} has {self.class_names}")
        load_model_weights(self.model, ckpt["model"], path)
        if self.method.teacher is not None and ckpt.get("teacher") is not None:
            load_model_weights(self.method.teacher, ckpt["teacher"], path, what="teacher")
        self.method.load_state_dict(ckpt.get("method") or {})
        if ckpt.get("optimizer") is None or ckpt.get("scheduler") is None:
            raise CheckpointError(f"checkpoint {path}: no optimizer/scheduler state; it cannot be resumed")
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.use_amp and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.start_iter = int(ckpt["iteration"])
        self.last_checkpoint = path
        if self.dist.is_main:
            print(f"boxseg train: resuming from {path} at iteration {self.start_iter}", file=sys.stderr)
        # Under DDP each rank restores the RNG state rank 0 saved: fine, they all start from the same seed.
        return ckpt.get("rng")

    # ------------------------------------------------------------------ pieces of one iteration
    def _check_finite(self, values: dict[str, float], iteration: int) -> None:
        bad = next(((k, v) for k, v in values.items() if not math.isfinite(v)), None)
        if D.any_rank(bad is not None, self.dist, self.device):
            term, value = bad if bad is not None else ("<on another rank>", float("nan"))
            raise TrainingDiverged(iteration, term, value, self.last_checkpoint)

    def _step(self, iteration: int) -> dict[str, float]:
        with stage("data"):
            batch = batch_to_device(next(self.loader), self.device)
        batch = self.method.prepare_batch(batch, iteration)
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.use_amp):
            losses = self.method.compute_losses(batch, iteration)
        if not losses:
            raise RuntimeError("the training method returned no loss terms")
        # One device->host copy for all terms; checked before backward so no update uses a bad loss.
        terms = torch.stack([v.detach().float().reshape(()) for v in losses.values()]).tolist()
        values = dict(zip(losses.keys(), terms))
        self._check_finite(values, iteration)
        total = sum(losses.values())
        self.optimizer.zero_grad(set_to_none=True)
        with stage("backward"):
            self.scaler.scale(total).backward()
        with stage("optimizer"):
            if self.cfg.solver.clip_grad_norm > 0:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.solver.clip_grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
        self.method.after_step(iteration)
        values["total"] = float(sum(terms))
        self.last_telemetry = self.method.telemetry()
        return values

    def _save(self, iteration: int, name: str = "last.pt") -> Path:
        ckpt = make_checkpoint(
            model=self.model, iteration=iteration, config=config_to_dict(self.cfg), class_names=self.class_names,
            optimizer=self.optimizer, scheduler=self.scheduler, teacher=self.method.teacher,
            method_state=self.method.state_dict(), rng=capture_rng(), cat_ids=list(self.train_set.cat_ids),
        )
        ckpt["scaler"] = self.scaler.state_dict() if self.use_amp else None  # AMP loss scale
        path = save_checkpoint(ckpt, self.ckpt_dir / name)
        self.last_checkpoint = path
        return path

    def _evaluate(self) -> dict[str, Any] | None:
        """Mask and box AP of the evaluated model (the student); with an EMA teacher, the teacher's under
        ``teacher`` beside it, so a log shows whether the teacher is ahead of the student it labels for."""
        if self.val_set is None:
            return None
        result = self._evaluate_model(self.method.model_for_eval)
        teacher = self.method.teacher
        if teacher is not None and teacher is not self.method.model_for_eval:
            result = {**result, "teacher": self._evaluate_model(teacher)}
        self.last_eval = result
        return result

    def _evaluate_model(self, model: nn.Module) -> dict[str, Any]:
        from boxseg.eval.predict import evaluate_model

        was_training = model.training
        try:
            return evaluate_model(
                model, self.val_set, self.device, self.cfg.runtime.eval_batch_size, self.cfg.runtime.eval_score_thr,
                input_cfg=self.cfg.input,
            )
        finally:
            model.train(was_training)

    # ------------------------------------------------------------------ main loop
    def train(self) -> dict[str, Any]:
        """Run to ``solver.max_iter``; returns a summary (paths, final losses, last evaluation)."""
        self._setup()
        try:
            return self._run()
        finally:
            if self.dist.is_main:
                self.metrics.close()
            D.cleanup(self.dist)

    def _run(self) -> dict[str, Any]:
        cfg, rt, main = self.cfg, self.cfg.runtime, self.dist.is_main
        max_iter = cfg.solver.max_iter
        self.model.train()
        bar = None
        if main and rt.progress:
            from tqdm import tqdm

            bar = tqdm(total=max_iter, initial=self.start_iter, file=sys.stderr, desc="train", unit="it",
                       dynamic_ncols=True, mininterval=0.5)
        window: list[dict[str, float]] = []
        tele_window: list[dict[str, float]] = []
        t_window = time.perf_counter()
        for it in range(self.start_iter, max_iter):
            lr = self.optimizer.param_groups[0]["lr"]
            values = self._step(it)
            self.history.append(values)
            window.append(values)
            if self.last_telemetry:
                tele_window.append(self.last_telemetry)
            done = it + 1
            if bar is not None:
                tele = {short: f"{self.last_telemetry[k]:.2f}" for k, short in TELEMETRY_BAR.items()
                        if k in self.last_telemetry and math.isfinite(self.last_telemetry[k])}
                bar.set_postfix({k: f"{v:.3f}" for k, v in values.items()} | tele | {"lr": f"{lr:.2e}"},
                                refresh=False)
                bar.update(1)
            if done % max(rt.log_every, 1) == 0 or done == max_iter:
                means = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
                means = D.all_reduce_mean(means, self.dist, self.device)
                record = {"iteration": done, "lr": lr, **means, "time_per_iter": (time.perf_counter() - t_window)
                          / len(window)}
                if tele_window:
                    # Rank 0's view (per-process bank and pastes); telemetry is for reading, not for averaging.
                    self.telemetry_summary = window_mean(tele_window)
                    record["telemetry"] = self.telemetry_summary
                if main:
                    self.metrics.write(record)
                window, tele_window, t_window = [], [], time.perf_counter()
            is_last = done == max_iter
            if main and (is_last or (rt.checkpoint_every > 0 and done % rt.checkpoint_every == 0)):
                self._save(done)
            if is_last or (rt.eval_every > 0 and done % rt.eval_every == 0):
                if main:
                    result = self._evaluate()
                    if result is not None:
                        self.metrics.write({"iteration": done, "eval": result})
                        if bar is not None:
                            teacher = result.get("teacher")
                            extra = (f" (teacher: segm AP {teacher['segm']['AP']:.2f}, bbox AP "
                                     f"{teacher['bbox']['AP']:.2f})" if teacher else "")
                            bar.write(f"iteration {done}: segm AP {result['segm']['AP']:.2f}, "
                                      f"bbox AP {result['bbox']['AP']:.2f}{extra}")
                D.barrier(self.dist)
        if bar is not None:
            bar.close()
        if self.start_iter >= max_iter and main:
            print(f"boxseg train: checkpoint is already at iteration {self.start_iter} >= solver.max_iter "
                  f"({max_iter}); nothing to do", file=sys.stderr)
        return {
            "out_dir": str(self.out_dir),
            "checkpoint": str(self.ckpt_dir / "last.pt"),
            "config": str(self.out_dir / "config.yaml"),
            "metrics": str(self.out_dir / "metrics.jsonl"),
            "start_iteration": self.start_iter,
            "iterations": max_iter,
            "final_losses": self.history[-1] if self.history else {},
            "telemetry": self.telemetry_summary,
            "eval": self.last_eval,
        }


def _default_model(cfg: TrainConfig) -> nn.Module:
    from boxseg.model.condinst import CondInst

    return CondInst(cfg.model)


def _default_criterion(cfg: TrainConfig) -> Any:
    from boxseg.train.losses.criterion import Criterion

    return Criterion(cfg.loss, cfg.model)
