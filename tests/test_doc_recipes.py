"""Every command the READMEs show runs as written, so a recipe cannot rot.

The fenced ``bash`` blocks of README.md, export/README.md, benchmarks/README.md and
serving/triton_repo/README.md are read in order (``\\`` continuations joined, ``&&`` split, comments
dropped).  Two tiers:

* **Every** ``segclip`` command (also behind ``.venv/bin/``, ``torchrun ... -m segclip``) is parsed by
  the real command line: the command exists, every option exists on it, every value is one it takes.
  Only "path does not exist" is allowed (the docs name a user's files).  No ``...`` placeholders.
* **The sample-set recipes run**, in order, in a temporary folder, on the path convention the
  quickstart writes (``qs/data``, ``qs/run``, ``qs/export``): the commands below whose first path is
  under ``qs/`` and export/README.md's recipe (export -> copy -> ``sh trtexec.sh``: the export must
  leave the ``trtexec.sh`` the next lines run).  The substitution table ``TINY`` shrinks them: the
  64 px test model stands in for ``qs/run`` and ``loveda/run``, sizes become 64, LoveDA becomes the
  sample set.  Lines that need what a test machine lacks are skipped by ``SKIP`` (the reason is given).
"""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# in the order a user meets them: make the export (serving) before benchmarking it
DOCS = ["README.md", "serving/triton_repo/README.md", "export/README.md", "benchmarks/README.md"]

# (pattern, reason): lines not run here (all segclip ones are still parsed)
SKIP = [
    (r"^scripts/", "installs the project / runs the suite"),
    (r"^(scp|ssh|docker) ", "another machine (the Jetson, a container)"),
    (r"^sh \S*trtexec\.sh", "needs TensorRT on the target GPU (the file is checked to exist)"),
    (r"benchmarks/run_targets\.py", "the 10-minute performance run"),
    (r"^torchrun ", "several processes (DDP)"),
    (r"segclip serve\b", "a server that runs until Ctrl-C (tests/test_serving*.py start one)"),
    (r"--triton-url|grpc://|http://", "a running Triton server (tests/test_serving_predict.py)"),
    (r"\btensorrt\b|--trt\b.*# on the GPU", "a GPU with TensorRT"),
]
# tiny sizes for the runnable tier: the doc's text -> what runs here
TINY = [
    (r"--size \d+x\d+|--size \d+(,\d+)*", "--size 64"),
    (r"--batch 1:1:\d+", "--batch 1:1:2"),
    (r"--batch 1,4", "--batch 1"),
    (r"loveda:/data/LoveDA", "sample:qs/data"),
    (r"--fp16\b", "--fp16 --fp16-threshold 0.9"),  # the 64 px test model's FP16 graph agrees on ~98.7 % (gate 99.5 %)
]


def doc_commands() -> list:
    """[(doc, command line)] of every fenced bash block, in document order."""
    out = []
    for doc in DOCS:
        text = (REPO / doc).read_text()
        for block in re.findall(r"^```(?:bash|sh|shell)\n(.*?)^```", text, re.S | re.M):
            joined = re.sub(r"\\\n\s*", " ", block)
            for line in joined.splitlines():
                line = re.sub(r"(^|\s)#.*$", "", line).strip()  # comments
                for part in line.split("&&"):
                    if part.strip():
                        out.append((doc, part.strip()))
    return out


def segclip_args(line: str):
    """The argv after ``segclip`` (``.venv/bin/segclip``, ``python -m segclip``), or None."""
    toks = shlex.split(line)
    for i, t in enumerate(toks):
        if t.endswith("segclip") and (t == "segclip" or t.endswith("/segclip")) and (i == 0 or toks[i - 1] == "-m"):
            return toks[i + 1:]
    return None


def skip_reason(line: str):
    return next((why for pat, why in SKIP if re.search(pat, line)), None)


def test_the_docs_have_commands():
    cmds = doc_commands()
    assert sum(1 for _, c in cmds if segclip_args(c) is not None) >= 25, cmds
    assert {d for d, _ in cmds} == set(DOCS)


@pytest.mark.parametrize("doc,line", doc_commands(), ids=lambda v: v if "/" in v or v.endswith(".md") else None)
def test_every_documented_command_parses(doc, line):
    import click

    from segclip.cli import main

    args = segclip_args(line)
    if args is None:
        return
    assert "..." not in args and not any(a.startswith("<") for a in args), f"{doc}: placeholder in `{line}`"
    name, rest = args[0], args[1:]
    assert name in main.commands, f"{doc}: `segclip {name}` is no command ({line})"
    try:
        main.commands[name].make_context(name, list(rest))
    except click.BadParameter as e:
        assert "does not exist" in e.format_message(), f"{doc}: `{line}`: {e.format_message()}"
    except click.ClickException as e:
        pytest.fail(f"{doc}: `{line}`: {e.format_message()}")


def _runnable(doc: str, line: str) -> bool:
    """The sample-set (``qs/``) commands and export/README.md's FP32/FP16 recipe (INT8 calibration takes
    minutes on a CPU: tests/test_int8.py); one benchmark line, the quick one (the others time every
    backend at every batch: tests/test_benchmark.py)."""
    args = segclip_args(line)
    if args is None or skip_reason(line) or (args[0] == "benchmark" and "--quick" not in args):
        return False
    paths = [a for a in args[1:] if not a.startswith("-")]
    return bool(paths) and (paths[0].startswith("qs/") or (doc == "export/README.md" and "--int8" not in args))


def test_the_sample_set_recipes_run_as_written(trained_checkpoint, tmp_path):
    """In order, as a user types them (a subprocess per command), at the sizes of ``TINY``."""
    (tmp_path / "qs" / "run").mkdir(parents=True)
    shutil.copy(trained_checkpoint, tmp_path / "qs" / "run" / "model_final.pt")
    shutil.copytree(tmp_path / "qs" / "run", tmp_path / "loveda" / "run")
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "OMP_NUM_THREADS": "2", "HOME": str(tmp_path)}
    ran = []
    for doc, line in doc_commands():
        if not _runnable(doc, line):
            continue
        tiny = line
        for pat, rep in TINY:
            tiny = re.sub(pat, rep, tiny)
        args = segclip_args(tiny)
        res = subprocess.run([sys.executable, "-m", "segclip", *args], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=300)
        assert res.returncode == 0, f"{doc}: `{line}` (ran as `{tiny}`): {res.stderr[-2000:]}"
        ran.append(line)
    # export/README.md: export, carry the folder, run its trtexec.sh there -- the script must be in it
    assert (tmp_path / "loveda" / "export" / "trtexec.sh").is_file()
    assert (tmp_path / "qs" / "export" / "manifest.json").is_file() and (tmp_path / "repo").is_dir()
    assert (tmp_path / "qs" / "export-benchmark" / "benchmark.json").is_file()
    assert len(ran) >= 4, ran
