from .support import cli_ws  # noqa: F401  (the session workspace, built once)
