"""`tbspark aggregate` refuses bad input with one clear line before starting anything."""

from __future__ import annotations

from typer.testing import CliRunner

from tbspark.cli import app

runner = CliRunner()


def test_unknown_starting_offsets_is_a_usage_error(tmp_path):
    res = runner.invoke(app, ["aggregate", "scenarios/wind-turbines.yaml", "--starting-offsets", "middle",
                              "--state-dir", str(tmp_path)])
    assert res.exit_code == 2
    assert ("Error: --starting-offsets must be earliest or latest, not 'middle' — "
            "pass --starting-offsets earliest (the default) or latest") in res.output


def test_a_missing_scenario_file_names_the_file(tmp_path):
    res = runner.invoke(app, ["aggregate", str(tmp_path / "nope.yaml"), "--state-dir", str(tmp_path)])
    assert res.exit_code == 2
    assert f"Error: {tmp_path / 'nope.yaml'}: no such file" in res.output
