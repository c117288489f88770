"""One command-line grammar: every command takes the shared flags; old spellings still work, with a note."""
import click
import pytest
from click.testing import CliRunner

from segclip.cli import main
from segclip.cli.options import batch_option, data_option, device_option, max_steps_option, out_option, size_option
from segclip.errors import SegclipError

SHARED = {
    "train": {"--data", "--size", "--batch", "--device", "--out", "--max-steps"},
    "eval": {"--data", "--size", "--batch", "--device", "--out"},
    "quickstart": {"--out", "--max-steps", "--device"},
    "export": {"--data", "--size", "--batch", "--device", "--out"},
    "predict": {"--size", "--batch", "--device", "--out"},
    "benchmark": {"--data", "--size", "--batch", "--device", "--out"},
    "sample-data": {"--size", "--out"},
    "prepare": {"--out"},
    "triton-repo": {"--out"},
    "tune": {"--size"},
}


def _visible_opts(cmd) -> set:
    return {o for p in cmd.params if isinstance(p, click.Option) and not p.hidden for o in p.opts}


@pytest.mark.parametrize("name", sorted(SHARED))
def test_each_command_has_the_shared_flags(name):
    opts = _visible_opts(main.commands[name])
    assert SHARED[name] <= opts, SHARED[name] - opts
    # and no second spelling of the same idea is advertised
    assert not opts & {"--dataset", "--data-root", "--crop-size", "--window", "--batch-size", "--steps", "--providers"}


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _error(res) -> str:
    errs = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert res.exit_code == 2 and len(errs) == 1 and "Traceback" not in res.output, (res.exit_code, res.output)
    return errs[0]


@pytest.mark.parametrize("name,args", [
    ("train", ["--data", "loveda:{missing}", "--size", "64", "--batch", "2", "--device", "cpu", "--out", "{tmp}/run",
               "--max-steps", "1"]),
    ("eval", ["{missing}", "--data", "loveda:{missing}:val", "--size", "64x96", "--batch", "2", "--device", "cpu",
              "--out", "{tmp}/m.json"]),
    ("export", ["{missing}", "--data", "loveda:{missing}", "--size", "64x96", "--batch", "1:2:4", "--device", "cpu",
                "--out", "{tmp}/exp"]),
    ("predict", ["--model", "{missing}", "{missing}", "--batch", "2", "--device", "cuda:0", "--out", "{tmp}/p"]),
    ("benchmark", ["{bogus}", "--data", "loveda:{missing}", "--size", "64,64x96", "--batch", "1,2", "--device", "cuda:0",
                   "--out", "{tmp}/b"]),
    ("prepare", ["isaid", "{missing}", "--out", "{tmp}/patches"]),
    ("triton-repo", ["{missing}", "--out", "{tmp}/repo"]),
])
def test_each_command_accepts_the_shared_flags(tmp_path, name, args):
    """The flags parse; the command then fails on its missing/bogus input (not on a flag)."""
    (tmp_path / "bogus.pt").write_bytes(b"not a checkpoint")
    fill = {"missing": tmp_path / "missing", "tmp": tmp_path, "bogus": tmp_path / "bogus.pt"}
    err = _error(_run(name, *[a.format(**fill) for a in args]))
    assert "missing" in err or "bogus" in err, err
    for flag in ("--data", "--size", "--batch", "--device", "--out"):
        assert not err.startswith(f"error: {flag}"), err


def test_quickstart_and_sample_data_take_out_and_max_steps(tmp_path):
    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "keep").write_text("x")
    assert "not a segclip quickstart" in _error(_run("quickstart", "--out", tmp_path / "q", "--max-steps", "1", "--device", "cpu"))
    res = _run("sample-data", "--out", tmp_path / "s", "--size", "64x64", "--num-train", "1", "--num-val", "1")
    assert res.exit_code == 0 and "64x64" in res.output, res.output


def test_the_warmup_warning_names_options_of_both_commands_that_print_it():
    """train and quickstart both print the short-run warning: every --flag it names exists on both."""
    import dataclasses
    import re

    from segclip.cli.train_cmds import quickstart, train, warmup_warning
    from segclip.config import PRESETS

    small = PRESETS["segclip-small"].train
    t = dataclasses.replace(small, max_steps=20)
    line = warmup_warning(t, "segclip-small")
    assert line and "--warmup-steps 2" in line
    for cmd in (train, quickstart):
        opts = {o for p in cmd.params for o in p.opts}
        assert set(re.findall(r"--[a-z][a-z-]+", line)) <= opts, (cmd.name, line)
    assert warmup_warning(small, "segclip-small") is None  # 300 steps > 50


def _probe():
    """A command built from the shared options that returns what the command body receives."""
    seen = {}

    @click.command()
    @data_option(default_split="val")
    @size_option(stride=False)
    @batch_option("int", default=4)
    @device_option()
    @out_option()
    @max_steps_option()
    def probe(**kw):
        seen.update(kw)

    return probe, seen


@pytest.mark.parametrize("old", [["--dataset", "loveda", "--data-root", "/d/L"], ["--window", "96"], ["--batch-size", "3"],
                                 ["o"], ["--steps", "7"], ["--providers", "cpu"]])
def test_no_old_spellings_before_the_first_release(old):
    """segclip 0.1.0 was never released: the old spellings of the shared options are gone, not shims."""
    probe, _ = _probe()
    res = CliRunner().invoke(probe, ["--data", "x:y", *old])
    assert res.exit_code == 2 and ("No such option" in res.output or "unexpected extra argument" in res.output), res.output


def test_parsed_values():
    probe, seen = _probe()
    res = CliRunner().invoke(probe, ["--data", "loveda:/d/L", "--size", "64x96", "--device", "CUDA:1", "--out", "o"])
    assert res.exit_code == 0, res.output
    assert tuple(seen["data"]) == ("loveda", "/d/L", "val") and str(seen["data"]) == "loveda:/d/L:val"
    assert seen["size"] == (64, 96) and seen["batch"] == 4 and seen["device"] == "cuda:1" and seen["out"] == "o"
    for args, needle in ((["--device", "gpu"], "--device 'gpu'"), (["--size", "64y"], "--size"),
                         (["--batch", "0"], "--batch")):
        probe, _ = _probe()
        res = CliRunner().invoke(probe, ["--data", "x:y"] * ("--data" not in args) + args)
        assert res.exit_code != 0 and isinstance(res.exception, SegclipError) and needle in str(res.exception), res.output


def test_python_twins_take_the_cli_keywords_only(tmp_path):
    """export(out=), build_repository(out=), run_benchmark(batch=, size=): the CLI's words, no old keywords."""
    from segclip.benchmarks import run_benchmark
    from segclip.export import export
    from segclip.serving.repo import build_repository

    with pytest.raises(SegclipError, match="missing"):
        export(tmp_path / "missing.pt", out=tmp_path / "e")
    for call in (lambda: export(tmp_path / "missing.pt", out_dir=tmp_path / "e"),
                 lambda: build_repository(tmp_path / "no-export", repo_dir=tmp_path / "repo"),
                 lambda: run_benchmark(tmp_path / "nothing", out=tmp_path / "bench", batches="x")):
        with pytest.raises(TypeError, match="unexpected keyword"):
            call()
    assert not any((tmp_path / n).exists() for n in ("e", "repo", "bench"))


def test_readme_preset_figures_match_the_presets():
    """The README's preset table is what segclip/config.py trains with."""
    import re
    from pathlib import Path

    from segclip.config import get_preset

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = [ln for ln in text.splitlines() if re.match(r"^\| `segclip-", ln)]
    assert len(rows) == 2, rows
    for ln in rows:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        for name in re.findall(r"`([^`]+)`", cells[0]):
            t = get_preset(name).train
            crop, batch, steps, lr, mult, warm, clip, window = cells[1:]
            assert (int(crop), int(batch), int(steps)) == (t.crop_size, t.batch_size, t.max_steps), name
            assert (float(lr), float(mult), int(warm), float(clip)) == (t.lr, t.backbone_lr_mult, t.warmup_steps, t.grad_clip), name
            assert (window == "crop" and t.eval_size is None) or int(window) == t.eval_size, name
