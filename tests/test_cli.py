import subprocess
import sys

from lipnet.cli import COMMANDS, main


def test_help_lists_every_subcommand_of_the_design():
    out = subprocess.run([sys.executable, "-m", "lipnet.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for name in ("train", "certify", "export", "hil", "simulate"):
        assert name in out.stdout


def test_every_command_has_help_with_example(capsys):
    for name in COMMANDS:
        try:
            main([name, "--help"])
        except SystemExit as exc:
            assert exc.code == 0
        assert name in capsys.readouterr().out


def test_no_command_exits_nonzero():
    assert main([]) == 2


def test_bad_plant_spec_is_a_clean_error(tmp_path, capsys):
    assert main(["train", "--plant", "no_such_plant", "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "no_such_plant" in err and "Traceback" not in err


def test_a_subcommand_not_built_says_so_and_exits_2(monkeypatch, capsys):
    import lipnet.cli as cli

    monkeypatch.setitem(cli.COMMANDS, "teleport", "a command this version does not have")
    assert cli.main(["teleport", "--anything"]) == 2
    assert "not available yet" in capsys.readouterr().err
