from typer.testing import CliRunner

from engine import cli


def test_version() -> None:
    cli._register()
    result = CliRunner().invoke(cli.app, ["--version"])
    assert result.exit_code == 0
    assert "xcast6-engine" in result.output
