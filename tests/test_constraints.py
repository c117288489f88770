"""constraints.txt, the tested dependency set: it pins every requirement scripts/install.sh installs, within
setup.cfg's ranges, and this environment runs those versions (unless it is the upgrade check's, SEGCLIP_LATEST=1)."""
from __future__ import annotations

import configparser
import os
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
# what INT8/ONNX results depend on most: a drift here is what issue 26's CI failure looked like
KEY = ("torch", "torchvision", "numpy", "onnx", "onnxruntime", "openvino", "onnxslim")


def _pins() -> dict:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version and not name.startswith("-"), f"constraints.txt: {line!r} is not NAME==VERSION"
            pins[canonicalize_name(name)] = version
    return pins


def _installed_requirements() -> list:
    """install_requires and the dev extra (what scripts/install.sh installs), as Requirements."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = cfg["options"]["install_requires"].splitlines() + cfg["options.extras_require"]["dev"].splitlines()
    return [Requirement(x.split("#", 1)[0].strip()) for x in lines if x.split("#", 1)[0].strip()]


def test_every_installed_requirement_is_pinned_within_its_range():
    pins = _pins()
    for req in _installed_requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} (setup.cfg) is not pinned in constraints.txt: add its tested version"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"constraints.txt pins {req.name}=={pins[name]}, outside setup.cfg's {req}"


@pytest.mark.skipif(os.environ.get("SEGCLIP_LATEST") == "1", reason="the upgrade check runs the newest releases on purpose")
def test_this_environment_runs_the_tested_versions():
    pins = _pins()
    drift = []
    for dist in KEY:
        try:
            have = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
        if pins.get(canonicalize_name(dist)) != have:
            drift.append(f"{dist} {have} (constraints.txt: {pins.get(canonicalize_name(dist))})")
    assert not drift, ("not the tested set: " + ", ".join(drift) + "; install with scripts/install.sh, or run "
                       "scripts/upgrade-check.sh --write to make these the tested set")
