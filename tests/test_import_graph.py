"""The package's import graph: no cycles, no upward imports, thin package faces.

The layers, lowest first (a module may import its own layer's package and anything lower, never
a higher or a sibling one):

    errors <- atomic / metadata / cpu <- signature / parsers / config / prompts <- contract / viz <- data / modeling
      <- checkpoint <- engine (training) <- runtime <- inference (code that drives runners) <- export
      <- serving <- benchmarks <- cli <- __main__

Every import is counted, also the ones inside functions: a lazy import is still a dependency.
"""
from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import segclip

ROOT = Path(segclip.__file__).resolve().parent
LAYERS = [
    ("segclip", "errors"),
    ("atomic", "metadata", "cpu"),
    ("signature", "parsers", "config", "prompts"),
    ("contract", "viz"),
    ("data", "modeling"),
    ("checkpoint",),
    ("engine",),
    ("runtime",),
    ("inference",),
    ("export",),
    ("serving",),
    ("benchmarks",),
    ("cli",),
    ("__main__",),
]
RANK = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def _modules() -> dict:
    """module name -> path of every module in the package (the python backend template excluded:
    it runs inside Triton's own environment and imports nothing of segclip)."""
    out = {}
    for p in ROOT.rglob("*.py"):
        rel = p.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if "python_backend" in parts:
            continue
        out[".".join(parts)] = p
    return out


def _unit(module: str) -> str:
    parts = module.split(".")
    return "segclip" if len(parts) == 1 else parts[1]


def _imports(path: Path, module: str) -> list:
    """(imported segclip module, line, at module level?) for every import in the file."""
    tree = ast.parse(path.read_text())
    top = set(map(id, tree.body))
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import; use absolute segclip.* imports"
            names = [node.module + "." + a.name for a in node.names]  # a submodule, else resolved to its module below
        for n in names:
            if n == "segclip" or n.startswith("segclip."):
                found.append((n, node.lineno, id(node) in top))
    return found


def _edges() -> dict:
    mods = _modules()
    edges = {}
    for name, path in mods.items():
        for target, line, top in _imports(path, name):
            while target not in mods:  # "from segclip.x import name" names an attribute, not a module
                target = target.rsplit(".", 1)[0]
            if target != name:
                edges.setdefault(name, []).append((target, line, top, path))
    return edges


def test_every_unit_has_a_layer():
    units = {_unit(m) for m in _modules()}
    assert not units - set(RANK), f"place these in LAYERS: {sorted(units - set(RANK))}"


def test_no_upward_or_sideways_imports():
    bad = []
    for src, targets in _edges().items():
        for dst, line, _, path in targets:
            us, ud = _unit(src), _unit(dst)
            if us == ud or dst == "segclip":
                continue
            if RANK[ud] >= RANK[us]:
                bad.append(f"{path.relative_to(ROOT.parent)}:{line}: {us} imports {dst} ({ud} is not below {us})")
    assert not bad, "\n".join(bad)


def test_engine_is_training_only():
    """``engine`` trains; loading checkpoints (``segclip.checkpoint``), device checks (``parsers``) and
    everything that drives a runner (``segclip.inference``) live elsewhere, so deployment code --
    runtime, inference, export -- never imports the trainer's package."""
    bad = [f"{path.relative_to(ROOT.parent)}:{line}: {src} imports {dst}"
           for src, targets in _edges().items() if _unit(src) in ("runtime", "export")
           for dst, line, _, path in targets if _unit(dst) == "engine"]
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    """Module-level imports (the ones that run at import time) form no cycle."""
    graph = {src: {d for d, _, top, _ in ts if top} for src, ts in _edges().items()}
    state, cycles = {}, []

    def visit(n, stack):
        state[n] = "open"
        for m in graph.get(n, ()):
            if state.get(m) == "open":
                cycles.append(" -> ".join(stack[stack.index(m):] + [m]))
            elif m not in state:
                visit(m, stack + [m])
        state[n] = "done"

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    assert not cycles, "\n".join(cycles)


def test_package_faces_are_thin():
    fat = [f"{p.relative_to(ROOT.parent)}: {n} lines" for p in ROOT.rglob("__init__.py")
           if (n := len(p.read_text().splitlines())) >= 80]
    assert not fat, fat


def test_runtime_imports_without_the_exporter(tmp_path):
    """A deployment without segclip.export (e.g. a Jetson with only the runtime) can load runners and
    read export directories: segclip.export is blocked and everything runtime needs still works."""
    import json

    d = tmp_path / "exp"
    d.mkdir()
    (d / "manifest.json").write_text(json.dumps({"format": "segclip-export", "format_version": 1, "artifacts": {
        "onnx": {"file": "model.onnx", "status": "failed"}}}))
    code = textwrap.dedent(f"""
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "segclip.export" or name.startswith("segclip.export."):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        import segclip.runtime, segclip.runtime.onnx_runner, segclip.runtime.torch_runner
        import segclip.runtime.tensorrt_runner, segclip.runtime.triton
        from segclip.errors import SegclipError
        try:
            segclip.runtime.load_runner({str(d)!r}, format="onnx")
        except SegclipError as e:
            print("error:", e)
        assert not [m for m in sys.modules if m.startswith("segclip.export")]
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    # the manifest was read through segclip.contract: the missing file is named, with what to do
    assert "model.onnx is missing (listed in manifest.json)" in res.stdout, res.stdout
