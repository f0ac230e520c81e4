"""Several ``botloom`` commands run one after the other in one new interpreter, each with its own output.

Starting Python and importing botloom (LangGraph, Litestar, the plugins) takes a few seconds
a process; a test that checks what half a dozen commands print paid that half a dozen times.
:func:`run_botloom_commands` starts one ``python`` (the given environment and folder, none of
the test process's state) that calls :func:`botloom.server.cli.main` with each command's
arguments in turn, as ``python -m botloom`` does, and returns what each printed and its exit
status. Between commands the root logger's handlers are removed, so each command configures
logging anew on its own standard error; an exception that escapes ``main`` is printed as a
traceback on the command's standard error with exit status 1, as the interpreter would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

DRIVER = r"""
import contextlib, io, json, logging, sys, traceback

from botloom.server.cli import main

commands, report = json.loads(sys.argv[1]), sys.argv[2]
results = []
for argv in commands:
    for handler in logging.root.handlers[:]:  # main() sets logging up on this command's standard error
        logging.root.removeHandler(handler)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's usage errors, as sys.exit() reports them
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except BaseException:
            traceback.print_exc()
            code = 1
    results.append([code, out.getvalue(), err.getvalue()])
with open(report, "w", encoding="utf-8") as fh:
    json.dump(results, fh)
"""


def run_botloom_commands(
    commands: Sequence[Sequence[str]],
    *,
    env: Mapping[str, str],
    cwd: Path | None = None,
    timeout: float = 180,
) -> list[subprocess.CompletedProcess[str]]:
    """Run each command (``botloom``'s arguments) in turn in one new interpreter; what each printed and returned."""
    with tempfile.TemporaryDirectory(prefix="botloom-cli-") as folder:
        report = Path(folder) / "report.json"
        process = subprocess.run(
            [sys.executable, "-c", DRIVER, json.dumps([list(c) for c in commands]), str(report)],
            env=dict(env),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert process.returncode == 0 and report.exists(), process.stdout + process.stderr
        results = json.loads(report.read_text(encoding="utf-8"))
    return [
        subprocess.CompletedProcess([sys.executable, "-m", "botloom", *argv], code, stdout, stderr)
        for argv, (code, stdout, stderr) in zip(commands, results, strict=True)
    ]
