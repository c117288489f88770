"""``segclip train``, ``segclip eval`` and ``segclip quickstart``."""
from __future__ import annotations

import time
from pathlib import Path

import click

from segclip.atomic import atomic_write_json
from segclip.cli.group import clean_partials
from segclip.cli.options import batch_option, data_option, device_option, max_steps_option, out_option, size_option
from segclip.contract import ONNX_RUNTIMES, RUNNABLE
from segclip.errors import SegclipError


def _default_device(device=None) -> str:
    from segclip.parsers import check_device

    return check_device(device)


def _parse_prompts(items) -> dict:
    out = {}
    for it in items:
        if "=" not in it:
            raise SegclipError(f"--prompt {it!r}: not CLASS=TEXT; give e.g. --prompt 'road=an asphalt road seen from above'")
        k, v = it.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _parse_templates(items) -> dict:
    out = {}
    for it in items or ():
        if "=" not in it or "{}" not in it.split("=", 1)[1]:
            raise SegclipError(f"--metadata-template {it!r}: expected KEY=PHRASE with {{}} for the value, "
                               f"e.g. --metadata-template 'climate=in a {{}} climate zone'")
        k, v = it.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def with_metadata(ds, sidecar, required: bool = True):
    """Apply a ``--metadata FILE`` sidecar to a dataset (no-op without one)."""
    if sidecar is not None:
        from segclip.metadata import apply_sidecar, load_sidecar

        apply_sidecar(ds, load_sidecar(sidecar), sidecar, required=required)
    return ds


def run_training(dataset: str, data_root: str, preset: str, out: str, *, resume=False, max_steps=None, batch_size=None,
                 lr=None, crop_size=None, backbone_weights=None, clip_checkpoint=None, device=None, seed=None,
                 checkpoint_every=None, gtg=True, prompts=None, prompt_template=None, num_workers=None,
                 progress=True, stop_after=None, metadata=None, metadata_templates=None, warmup_steps=None, amp=None,
                 value_range=None, gsd=None):
    """Build datasets and model from a preset and train; returns (trainer, fit result).
    ``metadata``: "auto" | "on" | "off" | a sidecar FILE (see ``segclip.metadata``).  ``gsd``: metres
    per pixel of the training images (default: the dataset's, ``segclip.data.gsd.dataset_gsd``; a
    resumed run keeps its own)."""
    from segclip.metadata import parse_switch
    from segclip.config import get_preset
    from segclip.data import build_dataset
    from segclip.engine.trainer import Trainer

    p = get_preset(preset)
    m, t = p.model, p.train
    for obj, key, val in ((t, "max_steps", max_steps), (t, "batch_size", batch_size), (t, "lr", lr),
                          (t, "crop_size", crop_size), (t, "seed", seed), (t, "checkpoint_every", checkpoint_every),
                          (t, "num_workers", num_workers), (t, "warmup_steps", warmup_steps), (m, "backbone_weights", backbone_weights),
                          (m, "clip_pretrained", clip_checkpoint), (m, "prompt_template", prompt_template),
                          (t, "amp", amp)):
        if val is not None:
            setattr(obj, key, val)
    m.gtg = gtg
    t.value_range = list(value_range) if value_range else None
    t.validate()
    mode, sidecar = parse_switch(metadata)
    if metadata is not None:
        m.metadata = mode
    if metadata_templates:
        m.metadata_templates = {**m.metadata_templates, **metadata_templates}
    opts = {"value_range": t.value_range}
    if prompts:
        opts["prompts"] = prompts
    if prompt_template:
        opts["prompt_template"] = prompt_template
    train_ds = with_metadata(build_dataset(dataset, data_root, "train", **opts), sidecar)
    try:
        val_ds = build_dataset(dataset, data_root, "val", **opts)
    except SegclipError:
        val_ds = None
    if val_ds is not None:
        with_metadata(val_ds, sidecar, required=False)
    from segclip.data.gsd import dataset_gsd, describe

    t.gsd = gsd if gsd is not None else dataset_gsd(train_ds)  # recorded in the checkpoint -> the export signature
    if t.gsd is None and not resume:
        click.echo(f"note: the ground sampling distance of --data {dataset} is unknown (not georeferenced, or the tiles "
                   f"disagree): predict will not resample to it; give train --gsd METRES", err=True)
    elif gsd is None and not resume:
        click.echo(f"note: ground sampling distance {describe(t.gsd)} per pixel ({dataset}; train --gsd overrides)", err=True)
    warning = warmup_warning(t, preset)
    if warning:
        click.echo(warning, err=True)
    # what this call set explicitly: a --resume checks each against the run's own
    given = {flag: (field, v) for flag, field, v in (
        ("--max-steps", "max_steps", max_steps), ("--batch", "batch_size", batch_size), ("--lr", "lr", lr),
        ("--size", "crop_size", crop_size), ("--seed", "seed", seed), ("--checkpoint-every", "checkpoint_every", checkpoint_every),
        ("num_workers", "num_workers", num_workers), ("--warmup-steps", "warmup_steps", warmup_steps),
        ("--backbone-weights", "backbone_weights", backbone_weights), ("--clip-checkpoint", "clip_pretrained", clip_checkpoint),
        ("--prompt/--prompt-template", "prompts", True if (prompts or prompt_template) else None),
        ("--no-gtg", "gtg", False if not gtg else None), ("--metadata", "metadata", mode if metadata is not None and mode != "auto" else None),
        ("--metadata-template", "metadata_templates", metadata_templates or None), ("--gsd", "gsd", gsd)) if v is not None}
    trainer = Trainer(train_ds, val_ds, out, m, t, dataset_name=dataset, device=device, resume=resume,
                      prompts=getattr(train_ds, "prompts", None), progress=progress, stop_after=stop_after, given=given)
    try:
        return trainer, trainer.fit()
    except BaseException:
        # a stopped DDP run (the ranks stop together) tears its process group down before the error propagates: left
        # to interpreter exit, gloo's threads sometimes abort the process ("terminate called without an active
        # exception", SIGABRT) instead of the error's own exit status
        from segclip.engine import distributed as D

        D.cleanup()
        raise


@click.command()
@data_option(default_split="train", help="Training data (the train split; val, when present, is evaluated).")
@click.option("--preset", default="segclip-r50", show_default=True, help="Named preset (segclip-r50, segclip-r50-fpn, segclip-small).")
@out_option(required=True, help="Run directory (checkpoints, logs, config).")
@click.option("--resume", is_flag=True, help="Continue bit-for-bit from the last checkpoint in --out.")
@max_steps_option(help="Total optimisation steps (overrides the preset).")
@batch_option("int", help="Images per process per step (default: the preset's).")
@click.option("--lr", type=float, help="Base learning rate (AdamW).")
@click.option("--warmup-steps", type=int, help="Linear learning-rate warm-up steps (default: the preset's; shorten it for short runs).")
@size_option(stride=False, square=True, help="Training crop S or SxS (default: the preset's).")
@click.option("--backbone-weights", help="'imagenet' (download by name), a local torchvision state-dict PATH, or 'none' (random init).")
@click.option("--clip-checkpoint", help="open_clip tag (e.g. 'openai', online), a local checkpoint PATH, or 'none' (random init).")
@click.option("--prompt", "prompt_items", multiple=True, help="Per-class description CLASS=TEXT (repeatable).")
@click.option("--prompt-template", help="Prompt template with {} for the class name (default 'a photo with a {}').")
@click.option("--no-gtg", is_flag=True, help="Disable ground-truth text guidance queries.")
@click.option("--metadata", help="Scene metadata prompts: auto (default: on when the dataset provides metadata, e.g. "
              "LoveDA Urban/Rural), on, off, or a CSV/JSON sidecar FILE (image stem -> key values).")
@click.option("--metadata-template", "metadata_templates", multiple=True,
              help="Phrase for a metadata key KEY=PHRASE with {} for the value (repeatable), e.g. 'climate=in a {} climate zone'.")
@click.option("--checkpoint-every", type=int, help="Save a checkpoint every N steps.")
@click.option("--range", "value_range", default=None, metavar="LOW,HIGH",
              help="16-bit/float imagery: scale LOW..HIGH to 0..255 (default: each image's 2-98th percentile). "
                   "Recorded in the checkpoint: eval, export and predict then apply the same range.")
@click.option("--gsd", default=None, metavar="METRES",
              help="Ground sampling distance of the training images, metres per pixel (default: the dataset's -- "
                   "LoveDA and the sample set 0.3; folder: from the tiles' georeferencing when they agree). Recorded "
                   "in the checkpoint and export; predict resamples georeferenced inputs to it.")
@device_option(help="cpu, cuda or cuda:N (default: cuda when available). Multi-GPU/multi-node: launch with torchrun.")
@click.option("--seed", type=int)
@click.option("--amp", type=click.Choice(["fp16", "bf16", "off"]), default=None,
              help="Mixed precision on CUDA (default: the preset's, fp16): bf16 where the GPU has it (compute capability >= 8.0).")
@click.option("--eval/--no-eval", "do_eval", default=True, show_default=True, help="Evaluate on the val split at the end.")
def train(data, preset, out, resume, max_steps, batch, lr, warmup_steps, size, backbone_weights, clip_checkpoint,
          prompt_items, prompt_template, no_gtg, metadata, metadata_templates, checkpoint_every, value_range, gsd, device,
          seed, do_eval, amp=None):
    """Train SegCLIP on a dataset (use torchrun --nproc_per_node N for DDP)."""
    from segclip.engine import distributed as D

    if data.split != "train":
        raise SegclipError(f"--data {data}: train reads the train split (and val for its evaluation); drop :{data.split}")
    if Path(out).exists() and not Path(out).is_dir():
        raise SegclipError(f"--out {out}: exists and is not a folder; give a run directory (new, or an earlier run with --resume)")
    from segclip.data.gsd import parse_gsd
    from segclip.parsers import parse_range

    from segclip.engine.trainer import claim_run_dir

    claim_run_dir(out, resume)  # before the datasets are read: refused at once
    gsd = None if gsd is None else parse_gsd(gsd)
    clean_partials(out, Path(out) / "checkpoints")
    trainer, res = run_training(data.dataset, data.root, preset, out, resume=resume, max_steps=max_steps, batch_size=batch,
                                lr=lr, warmup_steps=warmup_steps, crop_size=size, backbone_weights=backbone_weights, clip_checkpoint=clip_checkpoint,
                                device=device, seed=seed, checkpoint_every=checkpoint_every, gtg=not no_gtg,
                                prompts=_parse_prompts(prompt_items), prompt_template=prompt_template,
                                metadata=metadata, metadata_templates=_parse_templates(metadata_templates),
                                amp=amp, value_range=parse_range(value_range), gsd=gsd)
    if D.is_main():
        click.echo(f"trained {res['step']} steps in {res['train_seconds']:.0f} s -> {out}")
        if do_eval and trainer.val_dataset is not None:
            metrics = _evaluate_model(trainer.model, trainer.val_dataset, trainer.tcfg, trainer.device)
            atomic_write_json(Path(out) / "eval_val.json", metrics)
            from segclip.inference.compare import pct

            click.echo(f"val mIoU {pct(metrics['miou'])}  OA {pct(metrics['overall_accuracy'])} on {metrics['images']} val "
                       f"image(s)  -> {Path(out) / 'eval_val.json'}")
    D.cleanup()


def _evaluate_model(model, dataset, tcfg, device, batch_size=4, limit=None, progress=True, metadata=True,
                    exclude=()) -> dict:
    """Metrics of ``model`` on ``dataset``; ``metadata=False`` withholds the scene metadata (every
    image gets the generic scene) for the on/off ablation on the same checkpoint and data;
    ``exclude``: class indices left out of the means."""
    from segclip.inference.evaluate import evaluate, scene_ids_for, torch_scores_fn

    window = tcfg.eval_size or tcfg.crop_size
    out = evaluate(torch_scores_fn(model, device), dataset, model.num_classes, window, batch_size=batch_size,
                   progress=progress, limit=limit, scene_ids=scene_ids_for(dataset, None if model.scenes is None else model.scenes.scene_id, metadata), exclude=exclude)
    out["metadata"] = "on" if (model.scenes is not None and metadata) else "off"
    hw = (window, window) if isinstance(window, int) else tuple(window)
    out["computed_on"] = (f"{out['images']} val image(s), whole images in {hw[0]}x{hw[1]} windows, "
                          f"metadata {out['metadata']}")  # train and the quickstart score the val split; as eval says it
    return out


def _eval_dest(source: str, name: str, runner) -> Path:
    """Where eval writes ``<name>.json`` by default: in a run directory or beside a checkpoint; inside
    an export folder (segclip's own), one file per artifact however it was named (the folder or its
    file): ``EXPORT/<name>.<artifact file>.json``; the current folder for a server URL."""
    if runner.backend == "triton":
        return Path(f"{name}_{runner.name}.json")
    p = Path(source)
    if runner.backend == "torch":
        return p / f"{name}.json" if p.is_dir() else runner.checkpoint_path.with_suffix(f".{name}.json")
    export = p if p.is_dir() else p.parent
    if (export / "manifest.json").is_file() and runner.artifact:
        return export / f"{name}.{Path(runner.artifact).name}.json"
    return p.with_suffix(f".{name}.json")


def _eval_scene_ids(runner, ds, mode: str, given):
    """Per-image scene ids for a model trained with metadata prompts (None without), by the
    signature's one rule (``Signature.scene_of``); ``mode`` "off" gives every image the generic scene."""
    from segclip.inference.evaluate import scene_ids_for

    sig = runner.signature
    if not sig.scenes:
        if mode == "on":
            raise SegclipError(f"{runner.artifact}: trained without metadata prompts, so --metadata {given} has nothing to "
                               f"feed; omit --metadata or retrain with it")
        return None
    return scene_ids_for(ds, sig.scene_of, mode != "off")


def _eval_window(size, runner) -> tuple:
    """The sliding window: --size, else a fixed-size artifact's size, else the checkpoint's eval size."""
    sig = runner.signature
    if size is not None:
        hw = tuple(size)
        if not sig.dynamic_size and hw != (sig.height, sig.width):
            raise SegclipError(f"--size {hw[0]}x{hw[1]}: this {runner.backend} model takes {sig.height}x{sig.width} "
                               f"windows only; drop --size or give --size {sig.height}x{sig.width}")
        return hw
    if not sig.dynamic_size:
        return sig.height, sig.width
    if runner.backend == "torch":
        from segclip.config import train_config_from_dict

        t = train_config_from_dict(dict(runner.checkpoint.get("train_config") or {}))
        w = t.eval_size or t.crop_size
        return (w, w) if isinstance(w, int) else tuple(w)
    raise SegclipError(f"{runner.name}: this model takes any image size; give the sliding window with --size HxW "
                       f"(e.g. its training crop size)")


@click.command("eval")
@click.argument("model", metavar="MODEL")
@data_option(default_split="val", help="Labelled images to score.")
@size_option(stride=False,
             help="Sliding-window size HxW (default: a fixed-size artifact's size, else the checkpoint's eval size).")
@batch_option("int", default=4, help="Windows per forward pass (at most the artifact's max batch).")
@device_option(help="cpu, cuda or cuda:N (default: cuda when available; not for server URLs).")
@click.option("--format", "fmt", default=None, type=click.Choice(list(RUNNABLE)),
              help="Artifact of an export directory (default: the fastest gated one measured on this machine, "
                   "else TensorRT when usable here, else ONNX FP32).")
@click.option("--runtime", default=None, type=click.Choice(list(ONNX_RUNTIMES)),
              help="Runtime for ONNX artifacts (default: the one measured fastest here, else onnxruntime).")
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N images (a spot check: written to eval_<split>_first<N>.json, never over the full evaluation).")
@click.option("--metadata", help="on (default for a model trained with metadata), off (withhold it: every image gets the "
              "generic scene; the ablation), or a CSV/JSON sidecar FILE for this data.")
@click.option("--foreground-only", is_flag=True,
              help="Leave class 0 (background) out of mIoU/mF1, as iSAID results are reported.")
@out_option(help="Metrics JSON (default: RUN_DIR/eval_<split>[_nometa][_first<N>].json, beside a checkpoint, or inside "
                 "an export folder as eval_<split>...<artifact file>.json).")
@click.option("--allow-failed", is_flag=True, help="Evaluate an export artifact that failed its parity gate anyway (one "
                                                  "warning line).")
def eval_cmd(model, data, size, batch, device, fmt, runtime, limit, metadata, foreground_only, out, allow_failed):
    """Evaluate MODEL -- a checkpoint, run directory, export directory, .onnx, .plan or a Triton
    grpc:// / http:// URL -- on labelled data: mIoU, per-class IoU, F1, overall accuracy.

    Every model is scored the same way (mmseg protocol: whole images by sliding window, one confusion
    matrix over the split); artifacts without a scores output are blended by their class maps."""
    from segclip.contract import resolve_source
    from segclip.data import build_dataset
    from segclip.inference.compare import pct
    from segclip.inference.evaluate import evaluate, runner_predict_fn
    from segclip.inference.predict import runner_info
    from segclip.metadata import parse_switch
    from segclip.runtime import load_runner

    kind = resolve_source(model).kind
    if kind == "url" and device:
        raise SegclipError("--device: a Triton server URL runs where the server runs; drop --device")
    if kind in ("checkpoint", "run"):
        device = _default_device(device)  # PyTorch as train/eval always ran it; ONNX Runtime picks its own provider
    dataset, split = data.dataset, data.split
    meta_mode, sidecar = parse_switch(metadata)
    if out is not None and Path(out).is_dir():
        raise SegclipError(f"--out {out}: is a folder; give the metrics JSON file to write, e.g. --out {Path(out) / f'eval_{split}.json'}")
    opts = {k: v for k, v in (("format", fmt), ("runtime", runtime), ("device", device)) if v}
    if allow_failed and kind in ("export", "onnx"):  # only exports (and their ONNX files) hold gate verdicts
        opts["allow_failed"] = True
    runner = load_runner(model, **opts)
    if runner.choice is not None:  # which artifact of an export, and why
        click.echo(runner.choice.line())
    # 16-bit imagery: stretched as the model was trained (train --range; recorded in its signature)
    ds = with_metadata(build_dataset(dataset, data.root, split, value_range=runner.signature.value_range), sidecar)
    if not ds.has_labels:  # LoveDA's and iSAID's test splits come without masks
        raise SegclipError(f"--data {dataset}:{data.root}:{split}: this split has no labels to score against; "
                           f"pick a labelled split (e.g. val), or run segclip predict on its images")
    if tuple(runner.signature.classes) != tuple(ds.classes):
        raise SegclipError(f"{model}: trained on classes {list(runner.signature.classes)} but dataset {dataset} has "
                           f"{list(ds.classes)}; evaluate a model trained on this dataset")
    window = _eval_window(size, runner)
    scene_ids = _eval_scene_ids(runner, ds, meta_mode, metadata)
    # where the metrics go, decided before the work; a spot check (--limit) never replaces the full evaluation's file
    tag = f"{split}_nometa" if (meta_mode == "off" and runner.signature.scenes) else split
    dest = Path(out) if out else _eval_dest(model, f"eval_{tag}" + (f"_first{limit}" if limit else ""), runner)
    clean_partials(dest.parent)
    with runner:
        fn, mode = runner_predict_fn(runner)
        metrics = evaluate(fn, ds, runner.signature.num_classes, window, limit=limit, mode=mode, scene_ids=scene_ids,
                           batch_size=max(1, min(batch, runner.max_batch or batch)), exclude=(0,) if foreground_only else ())
    metrics["metadata"] = "on" if scene_ids is not None and meta_mode != "off" else "off"
    metrics.update({"model": str(model), "backend": runner.backend, "artifact": runner.name, "window": list(window),
                    "dataset": dataset, "split": split, "limit": limit,
                    "foreground_only": foreground_only, "runner": runner_info(runner)})
    if runner.backend == "torch":
        metrics["checkpoint"] = str(runner.checkpoint_path)
    # what the numbers are over, in the file and on screen (the benchmark and the export's parity table say theirs)
    metrics["computed_on"] = (f"{metrics['images']} image(s) of {dataset}:{data.root}:{split}, whole images in "
                              f"{window[0]}x{window[1]} windows, metadata {metrics['metadata']}")
    atomic_write_json(dest, metrics)
    click.echo(f"mIoU {pct(metrics['miou'])}  mF1 {pct(metrics['mf1'])}  OA {pct(metrics['overall_accuracy'])}  "
               f"on {metrics['computed_on']}")
    click.echo(f"  model: {runner.backend} {runner.name}")
    for name, v in metrics["per_class_iou"].items():
        click.echo(f"  {name:<20} IoU {pct(v)}")
    click.echo(f"-> {dest}")


def warmup_warning(t, preset: str):
    """One line when training stops before the learning-rate warm-up ends; it names only options that
    both ``train`` and ``quickstart`` have (both print it)."""
    if t.max_steps >= t.warmup_steps:
        return None
    return (f"warning: --max-steps {t.max_steps} is shorter than the {t.warmup_steps}-step learning-rate warm-up of "
            f"{preset}: the rate never reaches its peak {t.lr:g} (it stops at {t.lr * t.max_steps / t.warmup_steps:.2g}); "
            f"give e.g. --warmup-steps {max(1, t.max_steps // 10)}")


@click.command()
@out_option(default="quickstart", help="Output directory.")
@max_steps_option(help="Training steps (default: the small preset's).")
@click.option("--warmup-steps", type=click.IntRange(min=0), default=None,
              help="Learning-rate warm-up steps (default: the small preset's 50; shorten it with a short --max-steps).")
@click.option("--seed", default=0, show_default=True)
@click.option("--pretrained", is_flag=True, help="Use ImageNet/CLIP weights by name (needs internet); default is explicit random init.")
@device_option(help="cpu, cuda or cuda:N (default: cuda when available).")
@click.option("--export/--no-export", "do_export", default=True, show_default=True)
@click.option("--benchmark/--no-benchmark", "do_bench", default=True, show_default=True)
@click.option("--force", is_flag=True, help="Replace an existing quickstart directory.")
def quickstart(out, max_steps, warmup_steps, seed, pretrained, device, do_export, do_bench, force):
    """Generate the sample dataset, train the small preset, evaluate, export and benchmark."""
    from segclip.atomic import atomic_dir, holds_own

    out = Path(out)
    # --force replaces only an earlier quickstart: any other non-empty folder is refused
    if holds_own(out, is_quickstart, "a segclip quickstart", f"no {QUICKSTART_SUMMARY} of one") and not force:
        raise SegclipError(f"{out} already holds a quickstart ({QUICKSTART_SUMMARY}); pass --force to replace it "
                           f"or choose another --out")
    device = _default_device(device)
    clean_partials(out.parent)
    # built beside --out and swapped in at the end: an interrupted run leaves the previous result as it was
    with atomic_dir(out, replace=force) as stage:
        summary = _quickstart_into(stage, out, max_steps, seed, pretrained, device, do_export, do_bench,
                                   warmup_steps=warmup_steps)
    click.echo(f"summary -> {out / QUICKSTART_SUMMARY} (total {summary['total_seconds']:.0f} s)")


QUICKSTART_SUMMARY = "summary.json"


def is_quickstart(d: Path) -> bool:
    """A folder a quickstart wrote: its summary.json says so (the sample dataset, the small preset)."""
    import json

    try:
        s = json.loads((Path(d) / QUICKSTART_SUMMARY).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(s, dict) and s.get("dataset") == "sample" and "artifacts" in s


def _relocate(obj, moves: tuple):
    """Paths recorded while building in the staging folder, as they read after the swap
    (``moves``: (staging path, final path) pairs, as given and absolute)."""
    if isinstance(obj, dict):
        return {k: _relocate(v, moves) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_relocate(v, moves) for v in obj]
    if isinstance(obj, str):
        for old, new in moves:
            obj = obj.replace(old, new)
    return obj


def _quickstart_into(stage: Path, out: Path, max_steps, seed, pretrained, device, do_export, do_bench,
                     warmup_steps=None) -> dict:
    """The quickstart, written into ``stage`` (which becomes ``out``); returns the summary."""
    import json

    from segclip.data.sample import generate_sample_dataset

    t_start = time.time()
    summary = {"preset": "segclip-small", "dataset": "sample", "seed": seed, "pretrained": pretrained, "artifacts": {}}
    data = generate_sample_dataset(stage / "data", seed=seed)
    summary["artifacts"]["data"] = str(data)
    weights = {} if pretrained else {"backbone_weights": "none", "clip_checkpoint": "none"}
    if not pretrained:
        click.echo("quickstart: random init for backbone and CLIP text encoder (offline); --pretrained uses ImageNet/CLIP weights")
    run = stage / "run"
    trainer, res = run_training("sample", str(data), "segclip-small", str(run), max_steps=max_steps, seed=seed, device=device,
                                warmup_steps=warmup_steps, **weights)
    summary["train_seconds"] = round(res["train_seconds"], 1)
    summary["train_steps"] = res["step"]
    summary["artifacts"]["run_dir"] = str(run)
    summary["artifacts"]["checkpoint"] = str(run / "model_final.pt")
    metrics = _evaluate_model(trainer.model, trainer.val_dataset, trainer.tcfg, trainer.device)
    atomic_write_json(run / "eval_val.json", metrics)
    summary["val_miou"] = round(metrics["miou"], 4)
    summary["val_miou_computed_on"] = metrics["computed_on"]
    summary["val_overall_accuracy"] = round(metrics["overall_accuracy"], 4)
    summary["per_class_iou"] = metrics["per_class_iou"]
    summary["artifacts"]["eval"] = str(run / "eval_val.json")
    from segclip.inference.compare import pct

    click.echo(f"val mIoU {pct(metrics['miou'])} on {metrics['images']} val image(s) after {res['step']} steps "
               f"({res['train_seconds']:.0f} s)")
    if trainer.model.scenes is not None:  # ablation: same checkpoint and data, metadata withheld
        off = _evaluate_model(trainer.model, trainer.val_dataset, trainer.tcfg, trainer.device, metadata=False)
        atomic_write_json(run / "eval_val_nometa.json", off)
        summary["metadata"] = {"scenes": trainer.model.scenes.names, "val_miou_on": round(metrics["miou"], 4),
                               "val_miou_off": round(off["miou"], 4)}
        click.echo(f"val mIoU with scene metadata {pct(metrics['miou'])}, withheld {pct(off['miou'])} "
                   f"(scenes: {', '.join(trainer.model.scenes.names)})")
    _quickstart_preview(run, stage, out, summary, trainer.val_dataset, device)

    def say(message) -> None:  # lines about files name them where they will be (--out), not the staging folder
        click.echo(str(message).replace(str(stage), str(out)))

    for step_name, enabled, fn in (("export", do_export, _quickstart_export), ("benchmark", do_bench, _quickstart_benchmark)):
        if not enabled:
            continue
        try:
            fn(run, stage, summary, say)
        except ImportError as e:  # that part of the toolkit is not installed in this environment
            summary[f"{step_name}_status"] = f"skipped: {e}"
            click.echo(f"quickstart: {step_name} skipped ({e})")
    summary["total_seconds"] = round(time.time() - t_start, 1)
    # the paths recorded (summary, the export's source checkpoint, the benchmark's inputs) name --out
    moves = ((str(stage.absolute()), str(out.absolute())), (str(stage), str(out)))
    for js in sorted(stage.rglob("*.json")):
        obj = json.loads(js.read_text())
        if _relocate(obj, moves) != obj:
            atomic_write_json(js, _relocate(obj, moves))
    atomic_write_json(stage / QUICKSTART_SUMMARY, _relocate(summary, moves))
    return summary


# the quickstart's INT8: calibrated on half the sample set's 16 val images, gated on the other half
QUICKSTART_CALIB, QUICKSTART_GATE = 8, 8
# its benchmark: the quick rows plus the CPU's INT8 and OpenVINO paths, so the fastest shows in the first table
QUICKSTART_BACKENDS = ("torch", "onnxruntime", "onnxruntime-fp16", "onnxruntime-int8", "openvino", "openvino-int8",
                      "openvino-int8-msda")


def export_summary(manifest: dict, directory: Path) -> dict:
    """Each artifact of an export: status, file and its parity gate (agreement, threshold, mIoU delta)."""
    gate_keys = ("pixel_agreement", "threshold", "miou_delta", "miou_tolerance", "note")
    return {k: {"status": v.get("status"), "file": str(directory / v["file"]) if v.get("file") else None,
                "gate": {g: p[g] for g in gate_keys if g in p} if (p := v.get("parity")) else None}
            for k, v in (manifest.get("artifacts") or {}).items() if isinstance(v, dict)}


QUICKSTART_PREVIEW = "preview_val.png"


def _quickstart_preview(run: Path, stage: Path, out: Path, summary: dict, val_dataset, device) -> None:
    """image | prediction | truth of 4 val tiles, with the legend: what the trained model does (written
    into ``stage``, named by where it will be: ``out``)."""
    from segclip.inference.outputs import prediction_preview
    from segclip.runtime import load_runner

    with load_runner(run, device=device) as runner:
        path = prediction_preview(runner, val_dataset, stage / QUICKSTART_PREVIEW, n=4)
    summary["artifacts"]["prediction_preview"] = str(path)  # relocated to --out with the others
    click.echo(f"quickstart: predictions on 4 val tiles (image | prediction | truth) -> {out / QUICKSTART_PREVIEW}")


def _quickstart_export(run: Path, out: Path, summary: dict, log=click.echo) -> None:
    from segclip.contract import choose_artifact, read_manifest
    from segclip.errors import GateFailed
    from segclip.export import export

    d = out / "export"
    try:
        manifest = export(run, d, fp16=True, int8=True, calib_images=QUICKSTART_CALIB, parity_images=QUICKSTART_GATE,
                          batch=(1, 1, 4), data=f"sample:{out / 'data'}:val", log=log)
    except GateFailed as e:  # shown, not fatal: the failed artifact is marked in the manifest and never chosen
        log(f"quickstart: {e}")
        manifest = read_manifest(d)
    summary["artifacts"]["export"] = str(d)
    summary["export"] = export_summary(manifest, d)
    choice = choose_artifact(manifest, d)  # what segclip predict / eval run on this export here
    summary["default_runner"] = choice.to_dict()
    log(f"quickstart: {choice.line()}")


def _quickstart_benchmark(run: Path, out: Path, summary: dict, log=click.echo) -> None:
    from segclip.benchmarks import run_benchmark

    if not (out / "export").is_dir():  # the export step was skipped or failed: nothing of it to benchmark
        summary["benchmark_status"] = "skipped: no export"
        log("quickstart: benchmark skipped (no export)")
        return
    report = run_benchmark(out / "export", out=out / "benchmark", data=f"sample:{out / 'data'}:val", quick=True,
                           backends=",".join(QUICKSTART_BACKENDS), log=log)
    summary["artifacts"]["benchmark"] = str(out / "benchmark")
    summary["benchmark"] = report.get("summary", report) if isinstance(report, dict) else None
    s = summary["benchmark"] or {}
    best = (s.get("backends") or {}).get(s.get("fastest")) or {}
    if best:
        x = f", {best['speedup_vs_torch']:.2f}x torch eager" if best.get("speedup_vs_torch") else ""
        log(f"quickstart: fastest here {s['fastest']} ({best.get('p50_ms')} ms per {s.get('size')} window{x})")


COMMANDS = [train, eval_cmd, quickstart]
