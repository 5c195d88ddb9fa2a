"""Every `vox3d` sub-command resolves to a real function and answers --help."""

from __future__ import annotations

import importlib

import pytest

from vox3d.tools.cli import COMMANDS, main


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_entry_point_exists_and_helps(name, capsys):
    mod, fn = COMMANDS[name][0].split(":")
    assert callable(getattr(importlib.import_module(mod), fn))
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0
    assert "usage" in capsys.readouterr().out.lower()


def test_unknown_command_is_an_error(capsys):
    assert main(["no-such-command"]) == 2
    assert "unknown command" in capsys.readouterr().err
