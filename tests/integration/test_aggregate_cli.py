"""`tbspark aggregate` refuses bad input with one clear line before starting anything."""

from __future__ import annotations

from typer.testing import CliRunner

from tbspark.cli import app

runner = CliRunner()


def test_unknown_starting_offsets_is_a_usage_error(tmp_path):
    res = runner.invoke(app, ["aggregate", "scenarios/wind-turbines.yaml", "--starting-offsets", "middle",
                              "--state-dir", str(tmp_path)])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: Invalid value for '--starting-offsets'")
    assert "'middle' is not one of 'earliest', 'latest'" in lines[0]


def test_a_missing_scenario_file_names_the_file(tmp_path):
    res = runner.invoke(app, ["aggregate", str(tmp_path / "nope.yaml"), "--state-dir", str(tmp_path)])
    assert res.exit_code == 2
    assert f"Error: {tmp_path / 'nope.yaml'}: no such file" in res.output


def test_nice_outside_0_to_19_is_refused_before_anything_starts(tmp_path):
    res = runner.invoke(app, ["aggregate", "scenarios/wind-turbines.yaml", "--nice", "20",
                              "--state-dir", str(tmp_path)])
    assert res.exit_code == 2 and "less than or equal to 19" in res.output
    # The library call refuses it too (callers other than the CLI), before touching Kafka or Spark.
    import pytest

    from tbspark.aggregate.job import aggregate
    from tbspark.errors import AggregationError
    with pytest.raises(AggregationError, match="nice must be between 0 and 19, not -1"):
        aggregate(object(), None, None, nice=-1)
