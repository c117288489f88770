"""Scene metadata (MetaSegNet): image metadata -> a finite table of scene prompts.

Metadata come from a dataset's own layout (LoveDA's ``Urban``/``Rural`` folders give ``domain``)
or from a sidecar file (``--metadata FILE``) that works for any dataset::

    CSV:   image,domain,climate            JSON:  {"1366": {"domain": "urban", "climate": "temperate"},
           1366,urban,temperate                   "0":    {"domain": "rural"}}

keyed by image stem.  Each key has a phrase template; a scene's prompt is the generic prompt
followed by the phrases of the values it knows ("a remote sensing image" + "of a rural area" +
"in a temperate climate zone").  A missing or unknown value leaves its phrase out, so an image
with no usable metadata gets the generic prompt: never an error during training.

The scene table is the finite set of value combinations seen in training, after the generic scene
at id 0.  The model caches one CLIP embedding per scene (computed once, stored in the checkpoint);
the export bakes them into a constant table indexed by the ``scene_id`` input, whose default is 0.
Everything here is plain data, so checkpoints stay ``torch.load(weights_only=True)`` readable and
runtimes read the table without torch.
"""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

from segclip.errors import SegclipError

GENERIC = "generic"  # name of scene 0: metadata unknown
DEFAULT_PREFIX = "a remote sensing image"
# key -> phrase; "{}" is the value.  Keys without a template use "with {key} {}".
DEFAULT_TEMPLATES = {
    "domain": "of a {} area",
    "climate": "in a {} climate zone",
    "season": "taken in {}",
    "sensor": "from the {} sensor",
    "gsd": "at {} ground sample distance",
}
MISSING = {"", "unknown", "none", "nan", "n/a", "na", "null", "?", "-"}
SWITCH = ("auto", "on", "off")
_STEM_COLUMNS = ("image", "stem", "name", "file", "filename")
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def clean_value(v) -> Optional[str]:
    """Normalised metadata value, or None when missing/unknown."""
    if v is None:
        return None
    s = " ".join(str(v).split()).lower()
    return None if s in MISSING else s


def phrase(key: str, value: str, templates: Mapping[str, str]) -> str:
    t = templates.get(key) or f"with {key.replace('_', ' ')} {{}}"
    if value[:1] in "aeiou":  # "of a {} area" + urban -> "of an urban area"
        t = re.sub(r"\ba \{\}", "an {}", t)
    return t.replace("{}", value)


class SceneTable:
    """Scene id <-> name <-> prompt for the metadata ``keys``; id 0 is the generic scene."""

    def __init__(self, keys: Sequence[str], values: Sequence[Sequence[Optional[str]]] = (),
                 templates: Optional[Mapping[str, str]] = None, prefix: str = DEFAULT_PREFIX):
        self.keys = tuple(keys)
        self.templates = {**DEFAULT_TEMPLATES, **dict(templates or {})}
        self.prefix = str(prefix)
        combos = [tuple(v) for v in values]
        for c in combos:
            if len(c) != len(self.keys):
                raise SegclipError(f"scene table: {c} has {len(c)} values for {len(self.keys)} keys {self.keys}")
        unknown = tuple([None] * len(self.keys))
        self.values = [unknown] + [c for c in dict.fromkeys(combos) if c != unknown]

    # ---- construction --------------------------------------------------------------------------
    @classmethod
    def from_metas(cls, keys: Sequence[str], metas: Iterable[Mapping], templates=None, prefix=DEFAULT_PREFIX) -> "SceneTable":
        """The scenes present in ``metas`` (per-image metadata dicts), in sorted order (stable ids)."""
        keys = tuple(keys)
        combos = {tuple(clean_value(m.get(k)) for k in keys) for m in metas}
        ordered = sorted(combos, key=lambda c: tuple("" if v is None else v for v in c))
        return cls(keys, ordered, templates, prefix)

    def to_dict(self) -> dict:
        return {"keys": list(self.keys), "values": [list(v) for v in self.values], "templates": dict(self.templates),
                "prefix": self.prefix, "names": self.names, "prompts": self.prompts}

    @classmethod
    def from_dict(cls, d: Mapping) -> "SceneTable":
        return cls(d["keys"], [tuple(v) for v in d["values"]], d.get("templates"), d.get("prefix", DEFAULT_PREFIX))

    # ---- lookups -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.values)

    @property
    def names(self) -> list:
        """``generic``, then the values joined by ``/`` (``rural``, ``rural/temperate``; ``*`` = unknown)."""
        return [scene_name(c) for c in self.values]

    @property
    def prompts(self) -> list:
        out = []
        for c in self.values:
            parts = [phrase(k, v, self.templates) for k, v in zip(self.keys, c) if v is not None]
            out.append(" ".join([self.prefix] + parts))
        return out

    def scene_id(self, meta: Optional[Mapping]) -> int:
        """Scene of one image's metadata; a combination not in the table (or no metadata) -> 0."""
        return scene_of(self.names, self.keys, meta)


def scene_name(values: Sequence[Optional[str]]) -> str:
    """The name of a value combination: ``generic`` when nothing is known, else the values joined by
    ``/`` in key order (``*`` = unknown)."""
    return GENERIC if all(v is None for v in values) else "/".join(v or "*" for v in values)


def scene_of(names: Sequence[str], keys: Sequence[str], meta: Optional[Mapping]) -> int:
    """Scene id of one image's metadata in a table given by its ``names`` and ``keys`` (what an
    export's signature carries); a combination not in the table -> 0 (generic)."""
    if not meta or not keys:
        return 0
    name = scene_name([clean_value(meta.get(k)) for k in keys])
    return list(names).index(name) if name in names else 0


def lookup_scene(names: Sequence[str], name, where: str = "--scene") -> int:
    """Scene name/id -> id in ``names`` (the signature's list); shared by the CLI, runners and clients."""
    s = str(name).strip().lower()
    if re.fullmatch(r"[+-]?\d+", s):
        i = int(s)
        if 0 <= i < len(names):
            return i
        raise SegclipError(f"{where}: scene id {i} is out of range (this model has {len(names)} scenes: 0..{len(names) - 1}); "
                           f"scenes: {', '.join(names)}")
    if "=" in s:  # domain=rural[,climate=temperate]: values in key order are the name
        s = "/".join(p.split("=", 1)[1].strip() for p in s.split(","))
    low = [n.lower() for n in names]
    if s in low:
        return low.index(s)
    raise SegclipError(f"{where}: unknown scene {name!r}; this model knows: {', '.join(names)}")


# ---- sources ---------------------------------------------------------------------------------------
def load_sidecar(path) -> dict:
    """CSV or JSON sidecar -> ``{stem: {key: value}}``; malformed files/rows give a one-line error."""
    p = Path(path)
    if not p.is_file():
        raise SegclipError(f"--metadata {p}: no such file; give a CSV (image,key,...) or JSON ({{stem: {{key: value}}}}) sidecar, or on/off/auto")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise SegclipError(f"{p}: cannot read metadata sidecar ({e}); save it as UTF-8 text") from None
    out = _read_json(p, text) if p.suffix.lower() == ".json" else _read_csv(p, text)
    if not out:
        raise SegclipError(f"{p}: metadata sidecar has no rows; add one row per image (stem -> key values)")
    return out


def _check_key(p: Path, key, where: str) -> str:
    key = str(key).strip()
    if not _KEY_RE.match(key):
        raise SegclipError(f"{p}: {where}: metadata key {key!r} is not a plain name (letters, digits, _); rename it")
    return key


def _read_json(p: Path, text: str) -> dict:
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise SegclipError(f"{p}: not valid JSON ({e}); expected {{\"<image stem>\": {{\"<key>\": \"<value>\"}}}}") from None
    if not isinstance(doc, dict):
        raise SegclipError(f"{p}: expected a JSON object {{\"<image stem>\": {{\"<key>\": \"<value>\"}}}}, got {type(doc).__name__}")
    out = {}
    for stem, row in doc.items():
        if not isinstance(row, dict) or any(isinstance(v, (dict, list)) for v in row.values()):
            raise SegclipError(f"{p}: entry {stem!r} must map keys to plain values, e.g. {{\"domain\": \"rural\"}}; got {json.dumps(row)[:80]}")
        out[str(stem)] = {_check_key(p, k, f"entry {stem!r}"): v for k, v in row.items()}
    return out


def _read_csv(p: Path, text: str) -> dict:
    rows = list(csv.reader(text.splitlines()))
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        return {}
    header = [c.strip() for c in rows[0]]
    if not header or header[0].lower() not in _STEM_COLUMNS or len(header) < 2:
        raise SegclipError(f"{p}: line 1: the CSV header must start with an image column ({'/'.join(_STEM_COLUMNS)}) "
                           f"followed by metadata keys, e.g. 'image,domain,climate'")
    keys = [_check_key(p, k, "line 1") for k in header[1:]]
    out = {}
    for line, r in enumerate(rows[1:], start=2):
        if len(r) != len(header):
            raise SegclipError(f"{p}: line {line}: {len(r)} fields but the header has {len(header)} ({','.join(header)}); "
                               f"quote values that contain commas")
        stem = Path(r[0].strip()).stem  # 12.png and 12 name the same image
        if not stem:
            raise SegclipError(f"{p}: line {line}: empty image name")
        if stem in out:
            raise SegclipError(f"{p}: line {line}: image {stem!r} is listed twice; keep one row per image")
        out[stem] = dict(zip(keys, r[1:]))
    return out


def apply_sidecar(dataset, table: Mapping[str, Mapping], where: str, required: bool = True) -> tuple:
    """Merge a sidecar into ``dataset``'s per-image metadata (sidecar wins); returns its keys.

    A sidecar that names no image of the (``required``: training) dataset is an error (wrong file
    or stem convention); images it does not name keep what they have (and fall back to the
    generic prompt)."""
    base = getattr(dataset, "dataset", dataset)  # tiled view -> its source
    records = getattr(base, "records", None)
    if records is None:
        raise SegclipError(f"--metadata {where}: dataset {getattr(dataset, 'name', '?')} keeps no per-image records; "
                           f"use a loveda/isaid/uavid/folder dataset")
    hits = 0
    for i, (img, mask, meta) in enumerate(records):
        row = table.get(Path(img).stem)
        if row is not None:
            hits += 1
            records[i] = (img, mask, {**meta, **{k: v for k, v in row.items()}})
    if not hits and required:
        example = Path(records[0][0]).stem if records else "?"
        raise SegclipError(f"--metadata {where}: names none of the {len(records)} images of the {getattr(base, 'name', '?')} "
                           f"dataset (e.g. {sorted(table)[0]!r} vs image stem {example!r}); key rows by image file stem")
    keys = []
    for row in table.values():
        keys.extend(k for k in row if k not in keys)
    merged = tuple(dict.fromkeys(tuple(getattr(base, "metadata_keys", ())) + tuple(keys)))
    base.metadata_keys = dataset.metadata_keys = merged
    return tuple(keys)


def dataset_metas(dataset) -> list:
    """Per-item metadata dicts without decoding images (tiles inherit their image's)."""
    return [dataset.meta(i) for i in range(len(dataset))]


def parse_switch(value) -> tuple:
    """``--metadata`` value -> (mode, sidecar path or None): on/off/auto, or a FILE (implies on)."""
    if value is None:
        return "auto", None
    s = str(value).strip()
    if s.lower() in SWITCH:
        return s.lower(), None
    return "on", s


def resolve_table(mode: str, dataset, templates=None, prefix=DEFAULT_PREFIX) -> Optional[SceneTable]:
    """The scene table to train with, or None (metadata off / the dataset provides none)."""
    keys = tuple(getattr(dataset, "metadata_keys", ()) or ())
    if mode == "off":
        return None
    if not keys:
        if mode == "on":
            raise SegclipError(f"--metadata on: dataset {getattr(dataset, 'name', '?')} provides no metadata; "
                               f"pass --metadata FILE (a CSV/JSON sidecar: image stem -> key values) or --metadata off")
        return None
    return SceneTable.from_metas(keys, dataset_metas(dataset), templates, prefix)
