"""Bad input to every command, as a new user would give it: each case must exit 2 with exactly one
``error: <what>; <what to do>`` line naming the thing, print no traceback, and leave every file
of the workspace as it was (nothing written, changed or left behind)."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from segclip.cli import main
from .support import error_line, fingerprint, segclip_subprocess, tree_diff

DATA = "--data sample:{data}"
TRAIN = "train " + DATA + " --preset segclip-small --out {root}/newrun --backbone-weights none --clip-checkpoint none"
EVAL = "eval {run} " + DATA
PREDICT = "predict --model {run} --out {root}/newpreds"
EXPORT = "export {run} --out {root}/newexport"
BENCH = "benchmark {export} --quick --out {root}/newbench"

# (id, command line, needles that the error line must contain)
CASES = [
    # ---- the group itself
    ("unknown-command", "trian", ["no such command", "usage:"]),
    ("unknown-option", "eval {run} --data sample:{data} --bogus 1", ["--bogus"]),
    # ---- sample-data
    ("sample-data-out-is-file", "sample-data --out {file}", ["afile.txt"]),
    ("sample-data-out-is-file-positional", "sample-data {file}", ["afile.txt"]),
    ("sample-data-occupied", "sample-data --out {occupied}", ["occupied", "not a segclip sample dataset"]),
    ("sample-data-occupied-force", "sample-data --out {occupied} --force", ["occupied", "not a segclip sample dataset"]),
    ("sample-data-size-0", "sample-data --out {root}/s --size 0", ["--size", "0"]),
    ("sample-data-num-train-0", "sample-data --out {root}/s --num-train 0", ["--num-train"]),
    ("sample-data-size-text", "sample-data --out {root}/s --size big", ["--size", "big"]),
    # ---- prepare
    ("prepare-unknown-dataset", "prepare loveda {data} --out {root}/p", ["loveda", "isaid"]),
    ("prepare-missing-src", "prepare isaid", ["SRC", "usage:"]),
    ("prepare-missing-out", "prepare isaid {data}", ["--out"]),
    ("prepare-src-missing", "prepare isaid {root}/nowhere --out {root}/p", ["nowhere", "does not exist"]),
    ("prepare-dst-is-file", "prepare isaid {data} --out {file}", ["afile.txt"]),
    ("prepare-dst-is-file-positional", "prepare isaid {data} {file}", ["afile.txt"]),
    ("prepare-dst-occupied", "prepare isaid {data} --out {occupied}", ["occupied", "not patches segclip prepare wrote"]),
    ("prepare-dst-occupied-force", "prepare isaid {data} --out {occupied} --force", ["occupied", "prepare_manifest.json"]),
    ("prepare-tile-0", "prepare isaid {data} --out {root}/p --tile 0", ["--tile", "0"]),
    ("prepare-tile-negative", "prepare isaid {data} --out {root}/p --tile -5", ["--tile", "-5"]),
    ("prepare-stride-0", "prepare uavid {data} --out {root}/p --stride 0", ["--stride"]),
    ("prepare-label-order", "prepare uavid {data} --out {root}/p --label-order alphabetical", ["--label-order", "paper"]),
    ("prepare-no-splits", "prepare isaid {occupied} --out {root}/p", ["occupied"]),
    # ---- train
    ("train-missing-data", "train --out {root}/newrun", ["--data"]),
    ("train-max-steps-0", TRAIN + " --max-steps 0", ["--max-steps 0"]),
    ("train-max-steps-negative", TRAIN + " --max-steps -1", ["--max-steps -1"]),
    ("train-lr-negative", TRAIN + " --lr -0.001", ["--lr -0.001"]),
    ("train-lr-zero", TRAIN + " --lr 0", ["--lr 0"]),
    ("train-batch-0", TRAIN + " --batch 0", ["--batch", "0"]),
    ("train-checkpoint-every-0", TRAIN + " --checkpoint-every 0", ["--checkpoint-every 0"]),
    ("train-crop-not-stride", TRAIN + " --size 100", ["100", "multiple of 32"]),
    ("train-crop-0", TRAIN + " --size 0", ["--size"]),
    ("train-crop-not-square", TRAIN + " --size 64x128", ["--size", "square"]),
    ("train-device-cuda", TRAIN + " --device cuda", ["--device cuda", "cpu"]),
    ("train-device-unknown", TRAIN + " --device tpu", ["tpu"]),
    ("train-unknown-preset", TRAIN + " --preset segclip-r51", ["segclip-r51", "segclip-small"]),
    ("train-unknown-dataset", "train --data pascal:{data} --out {root}/newrun", ["pascal"]),
    # train has no --force: the fix named is another folder, never "pass --force"
    ("train-data-sample-occupied", "train --data sample:{occupied} --preset segclip-small --out {root}/newrun "
     "--backbone-weights none --clip-checkpoint none", ["occupied", "--data sample:"]),
    ("train-out-occupied", TRAIN + " --out {occupied}", ["occupied", "not a segclip training run"]),
    ("train-data-root-missing", "train --data loveda:{root}/nowhere --out {root}/newrun", ["nowhere"]),
    ("train-data-val-split", "train --data sample:{data}:val --out {root}/newrun", ["train split"]),
    ("train-prompt-format", TRAIN + " --prompt road", ["--prompt", "CLASS=TEXT"]),
    ("train-prompt-unknown-class", TRAIN + " --prompt roads=x", ["roads"]),
    ("train-out-is-run", "train " + DATA + " --preset segclip-small --out {run}", ["--resume"]),
    ("train-resume-nothing", TRAIN + " --resume", ["--resume", "newrun"]),
    ("train-out-is-file", "train " + DATA + " --preset segclip-small --out {file}", ["afile.txt"]),
    ("train-batch-too-big", TRAIN + " --batch 64 --max-steps 1", ["--batch"]),
    ("train-seed-text", TRAIN + " --seed abc", ["--seed", "abc"]),
    ("train-other-classes-resume", "train --data folder:{folder_data} --out {run} --resume", ["trained on classes"]),
    # ---- eval
    ("eval-missing-source", "eval " + DATA, ["MODEL", "usage:"]),
    ("eval-limit-0", EVAL + " --limit 0", ["--limit", "0"]),
    ("eval-batch-0", EVAL + " --batch 0", ["--batch 0", "give e.g. --batch 4"]),  # not the list 1,4,8 eval rejects
    ("eval-source-missing", "eval {root}/nowhere " + DATA, ["nowhere", "give a checkpoint"]),
    ("eval-truncated-checkpoint", "eval {trunc} " + DATA, ["trunc.pt", "truncated"]),
    ("eval-plain-dict", "eval {plain} " + DATA, ["plain.pt", "segclip train"]),
    ("eval-other-classes", "eval {other} " + DATA, ["trained on classes", "['a', 'b', 'c']"]),
    ("eval-empty-dir", "eval {occupied} " + DATA, ["occupied", "no checkpoint"]),
    ("eval-bad-split", "eval {run} --data sample:{data}:bogus", ["bogus"]),
    ("eval-device-cuda", EVAL + " --device cuda", ["--device cuda"]),
    ("eval-out-is-dir", EVAL + " --out {occupied}", ["--out", "occupied"]),
    ("eval-failed-artifact", "eval {failed_export} " + DATA + " --out {root}/e.json", ["parity gate", "--allow-failed"]),
    ("eval-failed-artifact-file", "eval {failed_export}/model.onnx " + DATA + " --out {root}/e.json",
     ["parity gate", "--allow-failed"]),
    # ---- export
    ("export-missing-source", "export", ["SOURCE", "usage:"]),
    ("export-source-missing", "export {root}/nowhere --out {root}/newexport", ["nowhere", "check the path"]),
    ("export-plain-dict", "export {plain} --out {root}/newexport", ["plain.pt", "segclip train"]),
    ("export-truncated", "export {trunc} --out {root}/newexport", ["trunc.pt", "truncated"]),
    ("export-dir-without-checkpoint", "export {occupied} --out {root}/newexport", ["occupied", "no checkpoint"]),
    ("export-parity-images-0", EXPORT + " --parity-images 0", ["--parity-images"]),
    ("export-batch-order", EXPORT + " --batch 4:2:1", ["--batch", "MIN <= OPT <= MAX"]),
    ("export-batch-text", EXPORT + " --batch big", ["--batch", "MIN:OPT:MAX"]),
    ("export-size-not-stride", EXPORT + " --size 100", ["--size", "multiples of 32"]),
    ("export-size-text", EXPORT + " --size wide", ["--size", "HxW"]),
    ("export-data-spec", EXPORT + " --data sample", ["--data", "DATASET:ROOT:SPLIT"]),
    ("export-data-missing-root", EXPORT + " --data loveda:{root}/nowhere:val", ["nowhere"]),
    ("export-data-other-classes", EXPORT + " --data folder:{folder_data}:val", ["trained on classes", "field"]),
    ("export-out-is-file", "export {run} --out {file}", ["afile.txt"]),
    ("export-out-occupied", "export {run} --out {occupied}", ["occupied", "another --out"]),
    ("export-exists", "export {run} --out {export}", ["--force"]),
    ("export-trt-dynamic", EXPORT + " --trt --dynamic-size", ["--dynamic-size", "fixed --size"]),
    ("export-threshold", EXPORT + " --fp32-threshold 2", ["--fp32-threshold 2", "(0, 1]"]),
    ("export-opset-99", EXPORT + " --opset 99", ["--opset 99", "17..", "--opset 17"]),  # was torch's traceback, exit 1
    ("export-opset-12", EXPORT + " --opset 12", ["--opset 12", "--opset 17"]),
    ("export-opset-low", EXPORT + " --opset 7", ["--opset 7"]),
    # ---- predict
    ("predict-no-images", "predict --model {run}", ["INPUTS", "usage:"]),
    ("predict-no-model", "predict {img}", ["--model"]),
    ("predict-out-is-file", "predict --model {run} {img} --out {file}", ["--out", "afile.txt"]),
    ("predict-image-missing", PREDICT + " {root}/nowhere.png", ["nowhere.png", "check the path"]),
    ("predict-image-is-dir", PREDICT + " {occupied}", ["occupied", "folder"]),
    ("predict-corrupt-image", PREDICT + " {corrupt_img}", ["corrupt.png"]),
    ("predict-batch-0", PREDICT + " {img} --batch 0", ["--batch", "0"]),
    ("predict-overlap", PREDICT + " {img} --overlap 1.5", ["--overlap 1.5"]),
    ("predict-existing-output", "predict --model {run} {img} --out {preds}", ["img_mask", "--force"]),
    ("predict-size-0", PREDICT + " {img} --size 0", ["--size", "0"]),
    ("predict-in-flight-0", PREDICT + " {img} --in-flight 0", ["--in-flight 0"]),
    ("predict-timeout-0", PREDICT + " {img} --timeout 0", ["--timeout"]),
    ("predict-bands-text", PREDICT + " {img} --bands red", ["--bands"]),
    ("predict-range-bad", PREDICT + " {img} --range 5", ["--range"]),
    ("predict-model-missing", "predict --model {root}/nowhere.onnx {img} --out {root}/newpreds", ["nowhere.onnx"]),
    ("predict-device-cuda", PREDICT + " {img} --device cuda", ["cuda", "cpu"]),
    ("predict-format-missing", "predict --model {export} --format onnx_fp16 {img} --out {root}/newpreds", ["onnx_fp16"]),
    ("predict-failed-artifact", "predict --model {failed_export} {img} --out {root}/newpreds", ["parity gate", "--allow-failed"]),
    ("predict-failed-artifact-file", "predict --model {failed_export}/model.onnx {img} --out {root}/newpreds",
     ["parity gate", "--allow-failed"]),
    ("predict-plain-dict", "predict --model {plain} {img} --out {root}/newpreds", ["plain.pt"]),
    # ---- benchmark
    ("benchmark-source-missing", "benchmark {root}/nowhere --out {root}/newbench", ["nowhere"]),
    ("benchmark-data-spec", BENCH + " --data sample", ["--data", "DATASET:ROOT:SPLIT"]),
    ("benchmark-data-missing-root", BENCH + " --data loveda:{root}/nowhere:val", ["nowhere"]),
    ("benchmark-data-other-classes", BENCH + " --data folder:{folder_data}:val", ["classes"]),
    ("benchmark-backend-unknown", BENCH + " --backends torch,tensorflow", ["tensorflow"]),
    ("benchmark-batch-0", BENCH + " --batch 0", ["--batch 0"]),
    ("benchmark-size-not-stride", BENCH + " --size 100", ["100"]),
    ("benchmark-reps-0", BENCH + " --reps 0", ["--reps"]),
    ("benchmark-limit-0", BENCH + " --limit 0", ["--limit"]),
    ("benchmark-budget-0", BENCH + " --budget 0", ["--budget 0"]),
    ("benchmark-existing-results", "benchmark {export} --quick --out {bench}", ["benchmark.json", "--force"]),
    ("benchmark-out-is-file", "benchmark {export} --out {file}", ["--out", "afile.txt"]),
    ("benchmark-device-unknown", BENCH + " --device tpu", ["--device", "tpu"]),
    # ---- triton-repo / serve / quickstart
    ("triton-repo-no-export", "triton-repo {root}/nowhere --out {root}/repo", ["nowhere"]),
    ("triton-repo-not-export", "triton-repo {occupied} --out {root}/repo", ["occupied"]),
    ("triton-repo-target-is-file", "triton-repo {export} --out {file}", ["afile.txt"]),
    ("triton-repo-max-batch-0", "triton-repo {export} --out {root}/repo --max-batch 0", ["--max-batch"]),
    ("serve-repo-missing", "serve --repo {root}/nowhere", ["nowhere"]),
    ("quickstart-occupied", "quickstart --out {occupied}", ["occupied", "not a segclip quickstart"]),
    ("quickstart-occupied-force", "quickstart --out {occupied} --force", ["occupied", "not a segclip quickstart"]),
    ("quickstart-out-is-file", "quickstart --out {file}", ["afile.txt"]),
    ("quickstart-max-steps-0", "quickstart --out {root}/qs --max-steps 0", ["--max-steps"]),
]


def _args(cmd: str, ws: dict) -> list:
    return [part.format(**ws) for part in cmd.split()]


@pytest.mark.parametrize("cmd,needles", [pytest.param(c, n, id=i) for i, c, n in CASES])
def test_bad_input(cli_ws, monkeypatch, cmd, needles):
    monkeypatch.chdir(cli_ws["root"])  # default output folders would land here: they must not appear
    before = fingerprint(cli_ws["root"])
    res = CliRunner().invoke(main, _args(cmd, cli_ws))
    assert res.exception is None or isinstance(res.exception, SystemExit), res.output
    line = error_line(res.output, 2, res.exit_code)
    for needle in needles:
        assert needle.format(**cli_ws) in line, f"{needle!r} not in {line!r}"
    assert tree_diff(before, fingerprint(cli_ws["root"])) == []


def test_case_count():
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("cmd,needles", [
    ("eval {run} --data sample:{data} --limit 0", ["--limit"]),  # a click range error
    ("train --data sample:{data} --out {root}/newrun --device cuda --max-steps 1", ["--device cuda"]),
])
def test_bad_input_real_process(cli_ws, cmd, needles):
    """The console script itself (not CliRunner): exit status and stderr as a shell sees them."""
    before = fingerprint(cli_ws["root"])
    proc = segclip_subprocess(_args(cmd, cli_ws), cwd=cli_ws["root"])
    out, _ = proc.communicate(timeout=300)
    line = error_line(out, 2, proc.returncode)
    assert all(n in line for n in needles), line
    assert tree_diff(before, fingerprint(cli_ws["root"])) == []


def test_no_bad_input_error_says_pass_force_to_train():
    for case_id, cmd, _ in CASES:
        if cmd.startswith("train"):
            assert "--force" not in cmd, case_id


@pytest.mark.parametrize("call", ["export-int", "predict-int-input", "predict-int-model"])
def test_python_api_names_a_non_path_argument(cli_ws, tmp_path, call):
    """export(123) and predict_paths([42], ...) raised a bare TypeError."""
    from segclip.errors import SegclipError
    from segclip.export import export
    from segclip.inference.predict import predict_paths

    fn = {"export-int": lambda: export(123, out=tmp_path / "e"),
          "predict-int-input": lambda: predict_paths(str(cli_ws["export"]), [42], tmp_path / "p"),
          "predict-int-model": lambda: predict_paths([42], [str(cli_ws["img"])], tmp_path / "p")}[call]
    with pytest.raises(SegclipError, match=r"(123|42) \(int\) is not a path; give"):
        fn()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("model", ["{failed_export}", "{failed_export}/model.onnx", "{run}"])
@pytest.mark.parametrize("cmd", ["eval {model} --data sample:{data} --limit 1 --out {tmp}/e.json",
                                 "predict --model {model} {img} --out {tmp}/p"])
def test_a_failed_artifact_runs_with_allow_failed_and_one_warning(cli_ws, tmp_path, model, cmd):
    """eval and predict, the export folder or its file: the same rule (refused above), and with
    --allow-failed one warning line; a checkpoint (no gate) takes the flag and runs as ever."""
    args = _args(cmd.replace("{model}", model).replace("{tmp}", str(tmp_path)), cli_ws) + ["--allow-failed"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    warnings = [line for line in res.output.splitlines() if line.startswith("warning:") and "parity gate" in line]
    if model == "{run}":
        assert warnings == [], res.output
    else:
        assert len(warnings) == 1 and "model.onnx" in warnings[0], res.output


def test_predict_paths_takes_one_path_as_a_string(cli_ws, tmp_path):
    """predict_paths("exp", "img.png", ...) iterated both strings character by character."""
    from segclip.inference.predict import predict_paths

    results, errors = predict_paths(str(cli_ws["export"]), str(cli_ws["img"]), tmp_path / "p", progress=False,
                                    log=lambda m: None)
    assert errors == [] and [r["input"] for r in results] == [str(cli_ws["img"])]
    assert (tmp_path / "p" / "img_mask.png").is_file()


def test_export_refuses_an_out_another_export_is_writing(cli_ws, tmp_path):
    """A second export to the same --out used to work for a minute, then say 'already exists'."""
    import subprocess
    import sys

    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / f".exp.partial-{writer.pid}-abc123").mkdir()  # what a live export's staging folder looks like
        before = fingerprint(tmp_path)
        res = CliRunner().invoke(main, ["export", str(cli_ws["run"]), "--out", str(tmp_path / "exp")])
        line = error_line(res.output, 2, res.exit_code)
        assert f"segclip process {writer.pid} is writing it now" in line
        assert tree_diff(before, fingerprint(tmp_path)) == []
    finally:
        writer.kill()
        writer.wait()


def _in_small_mount(tmp_path, args, mount_opts):
    """``segclip ARGS`` in a private mount namespace (``unshare -rm``, no root needed) where MNT is a
    tmpfs mounted with ``mount_opts``: a real full disk or read-only file system, nothing mocked."""
    import shutil
    import subprocess
    import sys

    from .support import REPO

    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k none {mnt}"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"this kernel/container allows no user mount namespaces ({probe.stderr.decode().strip()})")
    seg = " ".join([sys.executable, "-m", "segclip", *[str(a).replace("MNT", str(mnt)) for a in args]])
    # what the command left in the mount is listed before the namespace (and the mount) goes
    cmd = f"mount -t tmpfs -o {mount_opts} none {mnt} && {{ {seg}; rc=$?; echo LEFT:$(ls -A {mnt}); exit $rc; }}"
    env = dict(__import__("os").environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="2")
    res = subprocess.run(["unshare", "-rm", "sh", "-c", cmd], capture_output=True, text=True, env=env, timeout=600)
    out = res.stdout + res.stderr
    left = [ln for ln in out.splitlines() if ln.startswith("LEFT:")]
    assert len(left) == 1, out
    return res.returncode, out.replace(left[0] + "\n", ""), left[0][len("LEFT:"):].split()


@pytest.mark.parametrize("opts,needle", [("size=256k", "no space left"), ("ro", "read-only file system")],
                         ids=["full-disk", "read-only"])
def test_export_to_a_full_or_read_only_disk_is_one_error_line(cli_ws, tmp_path, opts, needle):
    """OSError 28 / 30 were tracebacks with exit 1; now one line, exit 2, and nothing left behind."""
    code, out, left = _in_small_mount(tmp_path, ["export", cli_ws["run"], "--out", "MNT/exp", "--parity-images", 1,
                                                 "--data", f"sample:{cli_ws['data']}:val"], opts)
    line = error_line(out, 2, code)
    assert needle in line and str(tmp_path / "mnt" / "exp") in line and "--out" in line, line
    assert left == []  # no partial export left on the full disk

def test_eval_of_a_split_without_labels_is_one_error_line(cli_ws, tmp_path):
    """eval on LoveDA's unlabelled Test split: one line before any work (it was evaluate's ValueError traceback)."""
    import shutil
    from pathlib import Path

    for img_dir in (Path(cli_ws["data"]) / "Val").glob("*/images_png"):
        shutil.copytree(img_dir, tmp_path / "d" / "Test" / img_dir.parent.name / "images_png")
    res = CliRunner().invoke(main, ["eval", str(cli_ws["run"]), "--data", f"loveda:{tmp_path / 'd'}:test",
                                    "--out", str(tmp_path / "e.json")])
    line = error_line(res.output, 2, res.exit_code)
    assert "test" in line and "no labels" in line and "val" in line, line
    assert not (tmp_path / "e.json").exists()
