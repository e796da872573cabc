from typer.testing import CliRunner

from fqtool import __version__
from fqtool.cli.app import app

runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_help_lists_registered_commands() -> None:
    from fqtool.cli.app import COMMANDS

    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name, _ in COMMANDS:
        assert name in result.output
