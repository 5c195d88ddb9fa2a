"""Reliability-suite fixtures: a session-wide table of (input, stage, outcome) rows that
the bad-input suite fills and :func:`pytest_terminal_summary` prints at the end."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

_OUTCOMES: list[tuple[str, str, str, str]] = []


@pytest.fixture(scope="session")
def outcomes() -> list[tuple[str, str, str, str]]:
    """Append ``(case, input, stage, outcome)``; printed as a table after the session."""
    return _OUTCOMES


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _OUTCOMES:
        return
    tr = terminalreporter
    tr.section("bad-input outcomes (issue 10): input, stage, outcome")
    rows = sorted(set(_OUTCOMES), key=lambda r: (r[2], r[0]))
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[2]) for r in rows)
    for name, inp, stage, outcome in rows:
        tr.write_line(f"{name:<{w0}}  {stage:<{w1}}  {outcome}    [{inp}]")


# ----------------------------------------------------------------------------- workflow

from tiny_workflow import ROOT, SNAKEMAKE, TINY  # noqa: E402,F401  (shared with test_workflow.py)


class Workflow:
    """Runs ``snakemake`` on the tiny config for one ``out_dir``.

    Each instance has its own working directory (``--directory``), so its ``.snakemake``
    (locks, incomplete markers) is private: ``--unlock`` here can never release the lock
    of someone else's run in the repository.  Asset paths are made absolute for that.
    """

    def __init__(self, tmp: Path, name: str) -> None:
        self.out = tmp / name
        self.workdir = tmp / f"{name}.wd"
        self.workdir.mkdir(parents=True, exist_ok=True)
        base = yaml.safe_load((ROOT / "config.yaml").read_text())
        shutil.copyfile(ROOT / "config.yaml", self.workdir / "config.yaml")
        assets = {
            k: (str((ROOT / v).resolve()) if isinstance(v, str) else v)
            for k, v in base["assets"].items()
        }
        self.cfg = tmp / f"{name}.yaml"
        self.cfg.write_text(yaml.safe_dump({**TINY, "assets": assets, "out_dir": str(self.out)}))

    def args(self, *extra: str) -> list[str]:
        return [
            str(SNAKEMAKE), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(self.workdir),
            "--cores", "2", "--configfile", str(self.workdir / "config.yaml"), str(self.cfg),
            *extra,
        ]  # fmt: skip

    def env(self) -> dict[str, str]:
        return dict(os.environ, PYTHONHASHSEED="0")

    def run(self, *extra: str, timeout: float = 900) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.args(*extra), env=self.env(), capture_output=True, text=True, timeout=timeout
        )

    def start(self, *extra: str, log: Path | None = None) -> subprocess.Popen:
        """Start in its own process group (so the whole group can be killed)."""
        fh = open(log or self.out.with_suffix(".log"), "ab")  # noqa: SIM115 - Popen owns it
        return subprocess.Popen(
            self.args(*extra), env=self.env(), stdout=fh, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


@pytest.fixture(scope="session")
def clean_run(tmp_path_factory) -> Workflow:
    """The tiny workflow run once, uninterrupted (the reference of kill/determinism)."""
    wf = Workflow(tmp_path_factory.mktemp("runs"), "clean")
    res = wf.run()
    assert res.returncode == 0, res.stderr[-4000:]
    return wf


@pytest.fixture
def workflow(tmp_path):
    """``workflow(name)`` -> a :class:`Workflow` writing into ``tmp_path/name``."""
    return lambda name: Workflow(tmp_path, name)
