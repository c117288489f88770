"""The Triton python-backend template (``model.py``), copied into generated model repositories.

It runs inside Triton's own environment, never imported by segclip; a package only so that it
installs with segclip (setuptools ships packages' modules, not loose data folders)."""
