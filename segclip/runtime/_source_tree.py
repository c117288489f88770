"""Make ``segclip.export`` (and ``segclip.serving``/``segclip.benchmarks``) importable from a source
checkout that is not pip-installed (``PYTHONPATH=.``).

setup.cfg maps these packages to the top-level folders ``export/``, ``serving/`` and
``benchmarks/`` (``package_dir``); an installed segclip has them in place and this does nothing.
From a bare checkout, a meta-path finder maps exactly those three names to the folders.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

_MAPPED = {"segclip.export": "export", "segclip.serving": "serving", "segclip.benchmarks": "benchmarks"}


class _SourceTreeFinder(importlib.abc.MetaPathFinder):
    def __init__(self, root: Path):
        self.root = root

    def find_spec(self, fullname, path=None, target=None):
        folder = _MAPPED.get(fullname)
        if folder is None:
            return None
        init = self.root / folder / "__init__.py"
        if not init.is_file():
            return None
        return importlib.util.spec_from_file_location(fullname, init, submodule_search_locations=[str(init.parent)])


def install() -> None:
    import segclip

    pkg_dir = Path(segclip.__file__).resolve().parent
    root = pkg_dir.parent
    if (pkg_dir / "export").exists() or not (root / "setup.cfg").is_file():
        return  # installed layout (or not our checkout): nothing to map
    if any(isinstance(f, _SourceTreeFinder) for f in sys.meta_path):
        return
    sys.meta_path.append(_SourceTreeFinder(root))
