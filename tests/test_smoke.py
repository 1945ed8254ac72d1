from typer.testing import CliRunner

from api import main as cli


def test_version() -> None:
    cli._register()
    result = CliRunner().invoke(cli.app, ["--version"])
    assert result.exit_code == 0
    assert "xcast6-engine" in result.output
