"""segclip: SegCLIP text-guided segmentation for remote sensing, from training to Triton."""
try:
    from importlib.metadata import version as _version

    __version__ = _version("segclip")
except Exception:  # running from a source tree that is not installed
    __version__ = "0.0.0+src"
