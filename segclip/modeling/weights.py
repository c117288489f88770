"""Named (online) pretrained weights: where they would come from, whether they are cached, and one
check before any download.

torchvision and open_clip each retry a failing download for tens of seconds and report only their
own weight; on an offline machine the user then fixes one flag, waits again and meets the next.
``check_pretrained_available`` looks at every named weight first: cached ones need nothing, and the
others need their hosts, probed once each with a short timeout.  When any is out of reach it fails
at once with one line naming all of them and the flags that work offline.
"""
from __future__ import annotations

import os
import socket
from typing import Optional
from urllib.parse import urlparse

from segclip.errors import SegclipError

PROBE_TIMEOUT_S = 3.0
OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "SEGCLIP_OFFLINE")


def named(weights: Optional[str]) -> bool:
    """A tag or name to download, as opposed to none or a local file."""
    return weights not in (None, "", "none") and not os.path.isfile(str(weights))


def backbone_source(name: str, weights: str) -> tuple:
    """(URL, cached file or None) of torchvision's ImageNet weights for ``name``."""
    import torch
    import torchvision

    from segclip.modeling.backbone import _IMAGENET

    url = torchvision.models.get_weight(_IMAGENET[name]).url
    path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))
    return url, path if os.path.isfile(path) else None


def clip_source(model: str, tag: str) -> Optional[tuple]:
    """(URL, cached file or None) of open_clip's weights ``model``/``tag``; None for an unknown tag
    (``load_clip`` reports that one)."""
    import open_clip
    from open_clip import pretrained as opc

    cfg = open_clip.get_pretrained_cfg(model, tag)
    if not cfg:
        return None
    if cfg.get("hf_hub") and opc.has_hf_hub():  # what open_clip prefers
        from huggingface_hub import try_to_load_from_cache

        repo, filename = os.path.split(cfg["hf_hub"])  # "org/model/" -> default file name, as open_clip does
        filename = filename or opc.HF_WEIGHTS_NAME
        for f in (*opc._get_safe_alternatives(filename), filename):
            hit = try_to_load_from_cache(repo, f)
            if isinstance(hit, str) and os.path.isfile(hit):
                return f"https://huggingface.co/{repo}", hit
        return f"https://huggingface.co/{repo}", None
    url = cfg.get("url", "")
    path = os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(url))
    return url, path if os.path.isfile(path) else None


def _reachable(url: str, timeout: float) -> Optional[str]:
    """None when a TCP connection to the URL's host (or the HTTPS proxy) opens, else why not."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    target = urlparse(proxy if proxy else url)
    host, port = target.hostname, target.port or (443 if target.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return None
    except OSError as e:
        return f"{host}:{port} unreachable ({type(e).__name__})"


def check_pretrained_available(backbone: str, backbone_weights: Optional[str], clip_model: Optional[str] = None,
                               clip_tag: Optional[str] = None, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Raise one ``SegclipError`` naming every named weight that is neither cached nor reachable."""
    wanted = []  # (label, flag, url)
    if named(backbone_weights):
        if backbone_weights == "imagenet":
            url, cached = backbone_source(backbone, backbone_weights)
            if cached is None:
                wanted.append((f"backbone {backbone} '{backbone_weights}'", "--backbone-weights", url))
    if clip_model and named(clip_tag):
        src = clip_source(clip_model, clip_tag)
        if src is not None and src[1] is None:
            wanted.append((f"CLIP {clip_model} '{clip_tag}'", "--clip-checkpoint", src[0]))
    if not wanted:
        return
    offline = [v for v in OFFLINE_ENV if os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")]
    probes = {}
    missing = []
    for label, flag, url in wanted:
        host = urlparse(url).hostname
        if host not in probes:
            probes[host] = f"{offline[0]}=1 is set" if offline else _reachable(url, timeout)
        if probes[host]:
            missing.append((label, flag, probes[host]))
    if missing:
        what = "; ".join(f"{label} ({why})" for label, _, why in missing)
        flags = " ".join(f"{flag} PATH" for _, flag, _ in missing)
        nones = " ".join(f"{flag} none" for _, flag, _ in missing)
        raise SegclipError(f"cannot download pretrained weights: {what}; offline, pass local files ({flags}) or "
                           f"random init ({nones})")
