"""Class prompts for the CLIP text encoder: one text per class.

Precedence: an explicit per-class description (the paper's "linguistic descriptions") > a
dataset's own default (e.g. from classes.yaml) > the template, filled with the class name (``_`` ->
space) at ``{}`` (or ``{name}`` / ``{class}``).
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

from segclip.errors import SegclipError

DEFAULT_TEMPLATE = "a photo with a {}"
_PLACEHOLDERS = ("{}", "{name}", "{class}")


def make_prompts(classes: Sequence[str], overrides: Optional[Mapping[str, str]] = None, template: Optional[str] = None,
                 defaults: Optional[Mapping[str, str]] = None, where: str = "prompts") -> tuple:
    template = DEFAULT_TEMPLATE if template is None else str(template)
    if not any(p in template for p in _PLACEHOLDERS):
        raise SegclipError(f"{where}: prompt template {template!r} has no '{{}}' placeholder for the class name; "
                           f"use e.g. 'a satellite image of {{}}'")
    overrides = dict(overrides or {})
    unknown = [k for k in overrides if k not in classes]
    if unknown:
        raise SegclipError(f"{where}: unknown class {unknown[0]!r} in prompt overrides; valid names: {', '.join(classes)}")
    out = []
    for c in classes:
        text = overrides.get(c) or (defaults or {}).get(c)
        if not text:
            name = c.replace("_", " ")
            text = template
            for p in _PLACEHOLDERS:
                text = text.replace(p, name)
        out.append(str(text))
    return tuple(out)
