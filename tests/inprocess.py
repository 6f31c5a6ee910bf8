"""Run the real CLIs (``pipeline.__main__.cli``, ``analysis.__main__.cli``) inside the test process.

The same code path as ``python -m pipeline ...`` (Hydra, callbacks, the error and signal handling)
without starting an interpreter and importing torch and MLflow again (~5 s a call on 2 cores). A
traceback of the real CLI is an exception here; the environment, signal handlers and root logger
are restored afterwards.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.cli import REPO, store_args


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def errors(self) -> list[str]:
        """The ``error:`` lines of stderr."""
        return [line for line in self.stderr.splitlines() if line.startswith("error:")]


def run_cli(tmp: Path, *args: str, module: str = "pipeline", env: dict[str, str] | None = None) -> Result:
    """``python -m MODULE ARGS`` with the store under ``tmp`` (ARGS may override it), in this process."""
    if module == "pipeline":
        from pipeline.__main__ import cli
    else:
        from analysis.__main__ import cli
    flags = [arg for arg in args if arg.startswith("-")]  # -m before the overrides: argparse needs them apart
    overrides = [arg for arg in args if not arg.startswith("-")]
    argv = [module, f"--config-path={REPO / 'conf'}", *flags, *store_args(tmp), *overrides]  # ARGS win
    saved_env, saved_argv = dict(os.environ), sys.argv
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    out, err = io.StringIO(), io.StringIO()
    os.environ.update(env or {})
    sys.argv = argv
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli()
    finally:
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
        for handler in root.handlers:
            if handler not in saved_handlers:
                handler.close()
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    return Result(code, out.getvalue(), err.getvalue())
