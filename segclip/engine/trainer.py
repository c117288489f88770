"""The training loop: AdamW + warm-up/poly schedule, gradient clipping, AMP on GPU, DDP via torchrun,
progress bar, CSV/TensorBoard logs, atomic checkpoints and bit-exact resume.

Determinism for resume: the data order of epoch e is a permutation seeded by (seed, e); every sample's
augmentation is seeded by (seed, e, index); the torch RNG state of every rank (used by point
sampling) is saved in each checkpoint.  Resuming from step s therefore replays exactly what an
uninterrupted run would have done from step s.
"""
from __future__ import annotations

import csv
import io
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from segclip.atomic import atomic_write_json, atomic_write_text, holds_own
from segclip.config import ModelConfig, TrainConfig, model_config_from_dict, train_config_from_dict
from segclip.errors import SegclipError
from segclip.modeling import build_model, semantic_targets
from segclip.modeling.criterion import SetCriterion
from segclip.modeling.matcher import HungarianMatcher
from segclip.engine import distributed as D
from segclip.engine.stability import NonFiniteGuard, amp_dtype
from segclip.checkpoint import (FINAL_NAME, atomic_save, check_classes, checkpoint_dict, checkpoint_scenes,
                                       has_checkpoints, is_run_dir, load_checkpoint, resolve_checkpoint)
from segclip.metadata import resolve_table
from segclip.parsers import check_device


def build_criterion(cfg: ModelConfig, num_classes: int) -> SetCriterion:
    matcher = HungarianMatcher(cfg.class_weight, cfg.mask_weight, cfg.dice_weight, cfg.train_num_points)
    return SetCriterion(num_classes, matcher, cfg.class_weight, cfg.mask_weight, cfg.dice_weight,
                        cfg.no_object_weight, cfg.train_num_points, cfg.oversample_ratio, cfg.importance_sample_ratio)


def param_groups(model, tcfg: TrainConfig) -> list:
    """Backbone at lr x backbone_lr_mult; no weight decay on norms, biases and embeddings (Mask2Former)."""
    groups = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        backbone = name.startswith("backbone.")
        no_decay = p.ndim <= 1 or name.endswith(("context", "query_pos", "gtg_pos", "level_embed", "token_embed"))
        key = (backbone, no_decay)
        if key not in groups:
            groups[key] = {"params": [], "lr": tcfg.lr * (tcfg.backbone_lr_mult if backbone else 1.0),
                           "weight_decay": 0.0 if no_decay else tcfg.weight_decay}
        groups[key]["params"].append(p)
    return [groups[k] for k in sorted(groups)]


def lr_lambda(tcfg: TrainConfig):
    def f(step: int) -> float:
        if step < tcfg.warmup_steps:
            return (step + 1) / tcfg.warmup_steps
        return (1 - min(step, tcfg.max_steps - 1) / tcfg.max_steps) ** tcfg.poly_power
    return f


class EpochBatches:
    """Deterministic, resumable batch order: epoch e is a permutation seeded by (seed, e), split
    across ranks; incomplete trailing batches are dropped so every rank takes the same steps."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int, world: int):
        self.n, self.bs, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.per_epoch = n // (batch_size * world)
        if self.per_epoch == 0:
            raise SegclipError(
                f"train: {n} training images are fewer than one global batch ({batch_size} x {world} processes); lower --batch"
            )

    def batch(self, step: int) -> tuple:
        epoch, i = divmod(step, self.per_epoch)
        g = torch.Generator().manual_seed(self.seed * 1000003 + epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        start = (i * self.world + self.rank) * self.bs
        return epoch, perm[start : start + self.bs]


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _drop_rows_after(path: Path, step: int) -> bool:
    """Resuming from step s replays the steps after s: rows a killed run logged past its last
    checkpoint (and a row cut short by the kill) are dropped, so each step is logged once.
    Returns whether the file keeps a complete header; one without (a run killed before its first
    row left it empty, or cut its header short) is emptied so the header is written again."""
    text = path.read_text()
    if "\n" not in text:  # no complete header line
        if text:
            atomic_write_text(path, "")
        return False
    rows = list(csv.reader(io.StringIO(text, newline="")))
    keep = [r for r in rows[1:] if len(r) == len(rows[0]) and r[0].isdigit() and int(r[0]) <= step]
    if len(keep) < len(rows) - 1:
        buf = io.StringIO()
        csv.writer(buf).writerows(rows[:1] + keep)
        atomic_write_text(path, buf.getvalue())
    return True


def claim_run_dir(out, resume: bool = False) -> None:
    """May a training run write into ``out``?  A non-empty folder that is not a run (the user's own
    files) is refused with or without --resume (train writes config.json and metrics.csv there);
    a run with checkpoints only with ``resume``, and ``resume`` needs one.  The train command
    calls it before reading any data, the Trainer again (the Python API)."""
    if holds_own(out, is_run_dir, "a segclip training run", "no checkpoint, no segclip config.json") \
            and has_checkpoints(out) and not resume:
        raise SegclipError(f"{out} already holds a training run; pass --resume to continue it or choose a new --out")
    if resume and not has_checkpoints(out):
        raise SegclipError(f"--resume: no checkpoint in {out}; start without --resume")


# a resumed run takes these from the call (max_steps extends it; the others change no step), every
# other option is the run's own: given with another value it is refused, not silently ignored
RESUME_APPLIES = ("max_steps", "checkpoint_every", "num_workers")
# initial weights: a resumed run's weights come from its checkpoint, so these are moot (said, not refused)
RESUME_MOOT = ("backbone_weights", "clip_pretrained")


def _same(field: str, a, b) -> bool:
    if field == "crop_size":  # S and [S, S] are one size
        def hw(v):
            return (v, v) if isinstance(v, int) else tuple(v)

        return hw(a) == hw(b)
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return list(a or ()) == list(b or ())
    return a == b


def check_resume_options(given: dict, mcfg: ModelConfig, tcfg: TrainConfig, out, prompts=None, run_prompts=None) -> None:
    """Refuse ``--resume`` with options that differ from the run's (naming each, and the run's value);
    one ``note:`` line for the initial-weight options, which a resumed run does not use."""
    differ, moot = [], []
    for flag, (field, value) in given.items():
        if field in RESUME_APPLIES:
            continue
        if field in RESUME_MOOT:
            moot.append(flag)
            continue
        cfg = tcfg if hasattr(tcfg, field) else mcfg
        if field == "prompts":  # --prompt/--prompt-template: the class prompts they give vs the run's
            if run_prompts is not None and prompts is not None and list(prompts) != list(run_prompts):
                differ.append(f"{flag} (the run's prompts: {'; '.join(run_prompts)})")
            continue
        if field == "metadata_templates":
            value = {**getattr(cfg, field), **value}
        if not _same(field, value, getattr(cfg, field)):
            shown = "" if isinstance(value, bool) else f" {value}"
            differ.append(f"{flag}{shown} (the run's: {getattr(cfg, field)})")
    if differ:
        raise SegclipError(f"--resume: {', '.join(differ)} differ{'s' if len(differ) == 1 else ''} from how {out} was "
                           f"trained; a resumed run keeps its own settings: drop {'them' if len(differ) > 1 else 'it'} "
                           f"(only --max-steps and --checkpoint-every apply to a resumed run) or start a new run with "
                           f"another --out")
    if moot:
        print(f"note: {', '.join(moot)} ignored: a resumed run continues from the weights in its checkpoint", file=sys.stderr)


class Trainer:
    def __init__(self, dataset, val_dataset, out: str | os.PathLike, mcfg: ModelConfig, tcfg: TrainConfig, *,
                 dataset_name: str, device: str = "cpu", resume: bool = False, prompts=None, progress: bool = True,
                 stop_after: int | None = None, given: dict | None = None):
        """``given``: the options this call set explicitly, ``{flag: (config field, value)}``; on
        ``resume`` each must match the run's own (``check_resume_options``)."""
        self.out = Path(out)
        tcfg.validate()
        self.rank, self.world, self.device = D.init_distributed(check_device(device))
        self.dataset, self.val_dataset = dataset, val_dataset
        self.dataset_name = dataset_name
        self.progress = progress and D.is_main()
        self.stop_after = stop_after  # stop (as if interrupted) after this many steps: tests and time budgets
        classes = tuple(dataset.classes)
        self.palette = tuple(dataset.palette)

        ckpt = None
        claim_run_dir(self.out, resume)
        if resume:
            ckpt = load_checkpoint(resolve_checkpoint(self.out, latest=True))
            check_classes(ckpt, classes, f"dataset {dataset_name}")
            mcfg = model_config_from_dict(dict(ckpt["model_config"]))
            saved_t = train_config_from_dict(dict(ckpt["train_config"]))
            check_resume_options(given or {}, mcfg, saved_t, self.out, prompts, ckpt.get("prompts"))
            for field, value in (given or {}).values():  # honoured: they change no step of the run
                if field in RESUME_APPLIES:
                    setattr(saved_t, field, value)
            if (saved_t.value_range or None) != (tcfg.value_range or None):  # the datasets were built with tcfg's
                def show(r):
                    return f"--range {r[0]:g},{r[1]:g}" if r else "no --range"

                raise SegclipError(f"--resume: {self.out} was trained with {show(saved_t.value_range)}, this call gives "
                                   f"{show(tcfg.value_range)}; give the run's own --range again")
            saved_t.max_steps = tcfg.max_steps  # a resumed run may be extended
            tcfg = saved_t
        self.mcfg, self.tcfg = mcfg, tcfg

        torch.manual_seed(tcfg.seed)  # identical init (and random-init CLIP) on every rank
        if ckpt is not None:
            mcfg.backbone_weights = "none"
            scenes, scene_emb = checkpoint_scenes(ckpt)
            model = build_model(mcfg, classes, ckpt["prompts"], ckpt["text_embeddings"], scenes, scene_emb)
            model.load_state_dict(ckpt["model"])
        else:
            scenes = resolve_table(mcfg.metadata, dataset, mcfg.metadata_templates, mcfg.metadata_prefix)
            mcfg.metadata = "on" if scenes is not None else "off"  # the checkpoint says what was trained
            model = build_model(mcfg, classes, prompts if prompts is not None else getattr(dataset, "prompts", None),
                                scenes=scenes)
        # every training image's scene, looked up once (metadata never changes during a run)
        self.scene_ids = torch.tensor([scenes.scene_id(dataset.meta(i)) for i in range(len(dataset))]) if scenes else None
        self.model = model.to(self.device)
        self.criterion = build_criterion(mcfg, len(classes)).to(self.device)
        self.ddp = DistributedDataParallel(self.model, find_unused_parameters=True) if self.world > 1 else None
        self.optimizer = torch.optim.AdamW(param_groups(self.model, tcfg), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(tcfg))
        self.amp_dtype = amp_dtype(tcfg.amp, self.device)  # None (CPU, --amp off), float16 or bfloat16
        self.use_amp = self.amp_dtype is not None
        # loss scaling for FP16 only: bfloat16 has FP32's exponent range
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        # every rank agrees whether a loss is finite: a rank raising alone would hang the others
        self.nonfinite = NonFiniteGuard(log=lambda m: tqdm.write(m, file=sys.stderr) if D.is_main() else None)
        self.step = 0
        if ckpt is not None:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
            if "scaler" in ckpt and ckpt["scaler"]:
                self.scaler.load_state_dict(ckpt["scaler"])
            self.step = int(ckpt["step"])
            states = ckpt["rng"]
            _set_rng_state(states[self.rank] if self.rank < len(states) else states[0])
        else:
            torch.manual_seed(tcfg.seed + self.rank)

        from segclip.data.transforms import TrainAugment

        self.augment = TrainAugment(dataset, tcfg.crop_size, seed=tcfg.seed)
        self.batches = EpochBatches(len(self.augment), tcfg.batch_size, tcfg.seed, self.rank, self.world)

    # ---- I/O -------------------------------------------------------------------------------------
    def _write_config(self):
        cfg = {"dataset": self.dataset_name, "classes": list(self.model.classes), "prompts": list(self.model.prompts),
               "scenes": self.model.scenes.to_dict() if self.model.scenes is not None else None,
               "model": asdict(self.mcfg), "train": asdict(self.tcfg), "world_size": self.world}
        atomic_write_json(self.out / "config.json", cfg)

    def _state(self) -> dict:
        rng = D.all_gather_object(_rng_state())
        return checkpoint_dict(self.model, self.palette, dataset=self.dataset_name, train_config=asdict(self.tcfg),
                               optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                               scaler=self.scaler.state_dict() if self.use_amp else None, step=self.step, rng=rng,
                               world_size=self.world)

    def save(self, final: bool = False) -> Path | None:
        state = self._state()  # collective: every rank takes part
        if not D.is_main():
            return None
        path = self.out / (FINAL_NAME if final else f"checkpoints/step_{self.step:07d}.pt")
        return atomic_save(state, path)

    # ---- loop ------------------------------------------------------------------------------------
    def _load_batch(self, step: int):
        from segclip.data.transforms import collate

        epoch, idx = self.batches.batch(step)
        self.augment.set_epoch(epoch)
        b = collate([self.augment[i] for i in idx])
        k = self.model.num_classes
        bad = (b["mask"] >= k) & (b["mask"] != 255)
        if bad.any():
            j = int(bad.flatten(1).any(1).nonzero()[0])
            value = int(b["mask"][j][bad[j]][0])
            path = self.dataset[idx[j]].get("meta", {}).get("path", f"item {idx[j]}")
            raise SegclipError(f"{path}: mask value {value} is outside the {k} classes ({', '.join(self.model.classes)}) "
                               f"and is not the ignore index 255; fix the mask or the class list")
        return b["image"].to(self.device), b["mask"].to(self.device), self._scene_batch(step, idx)

    def _scene_batch(self, step: int, idx: list):
        """Scene ids of a batch; a seeded share of images is shown as the generic scene 0 (metadata
        unknown), so the default an exported model falls back to is trained too.  Seeded by
        (seed, step): resume replays it exactly."""
        if self.scene_ids is None:
            return None
        ids = self.scene_ids[idx].clone()
        g = torch.Generator().manual_seed(self.tcfg.seed * 7919 + step)
        ids[torch.rand(len(idx), generator=g) < self.tcfg.metadata_dropout] = 0
        return ids.to(self.device)

    def train_step(self, images, masks, scene_ids=None) -> dict:
        targets = semantic_targets(masks, self.model.num_classes)
        num_masks = torch.tensor(float(sum(len(t["labels"]) for t in targets)), device=self.device)
        num_masks = D.all_reduce_mean(num_masks).clamp(min=1.0).item()
        net = self.ddp or self.model
        with torch.autocast("cuda", dtype=self.amp_dtype or torch.float16, enabled=self.use_amp):
            stages = net(images, targets, scene_ids)
        losses = self.criterion([(l.float(), m.float()) for l, m in stages], targets, self.mcfg.num_queries, num_masks)
        loss = sum(losses.values())
        if not self.nonfinite.check(loss, self.step):  # skipped on every rank: none waits for the others' gradients
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()  # the schedule follows the step count, as on resume
            main = {k: float("nan") for k in losses if not k.rsplit("_", 1)[-1].isdigit()}
            return {"loss": float("nan"), "grad_norm": float("nan"), **main}
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.tcfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        main = {k: v.item() for k, v in losses.items() if not k.rsplit("_", 1)[-1].isdigit()}
        return {"loss": loss.item(), "grad_norm": float(gnorm), **main}

    def fit(self) -> dict:
        if D.is_main():
            self.out.mkdir(parents=True, exist_ok=True)
            self._write_config()
        D.barrier()
        writer = csv_file = None
        if D.is_main():
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.out / "tb"))
            new = not (self.out / "metrics.csv").exists() or not _drop_rows_after(self.out / "metrics.csv", self.step)
            csv_file = open(self.out / "metrics.csv", "a", newline="")
        self.model.train()
        t0 = time.time()
        end = self.tcfg.max_steps if self.stop_after is None else min(self.tcfg.max_steps, self.step + self.stop_after)
        bar = tqdm(total=self.tcfg.max_steps, initial=self.step, disable=not self.progress, desc="train", unit="step", dynamic_ncols=True)
        log = None
        fields = None
        try:
            while self.step < end:
                images, masks, scene_ids = self._load_batch(self.step)
                rec = self.train_step(images, masks, scene_ids)
                self.step += 1
                lr = self.optimizer.param_groups[-1]["lr"]
                bar.update(1)
                bar.set_postfix(loss=f"{rec['loss']:.3f}", lr=f"{lr:.2e}")
                if D.is_main() and (self.step % self.tcfg.log_every == 0 or self.step == end):
                    log = {"step": self.step, "lr": lr, "time": round(time.time() - t0, 2), **rec}
                    if fields is None:
                        fields = list(log)
                        if new:
                            csv.writer(csv_file).writerow(fields)
                    csv.writer(csv_file).writerow([log.get(k, "") for k in fields])
                    csv_file.flush()
                    for k, v in rec.items():
                        writer.add_scalar(f"train/{k}", v, self.step)
                    writer.add_scalar("train/lr", lr, self.step)
                if self.step % self.tcfg.checkpoint_every == 0 and self.step < self.tcfg.max_steps:
                    self.save()
        finally:
            bar.close()
            if writer is not None:
                writer.close()
                csv_file.close()
        if self.step >= self.tcfg.max_steps:
            self.save(final=True)
        elif self.step % self.tcfg.checkpoint_every:
            self.save()  # stopped early: keep the state so --resume continues from here
        return {"step": self.step, "train_seconds": time.time() - t0, "last": log, "skipped_steps": self.nonfinite.skipped}
