"""Settings: the seed's names and defaults, ``.env`` < environment < flags, and every bad value
reported in one line that names the variable (exit 2 from ``python -m txpipe.config``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from txpipe.config import (
    Accumulation,
    ConfigError,
    LogLevel,
    Settings,
    WindowType,
    load_settings,
)
from txpipe.windowing import WindowSpec

VARIABLES = [name.upper() for name in Settings.model_fields]


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No setting in the environment, and a working directory with no ``.env``."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.upper() not in VARIABLES}
    env.update(extra)
    return env


def test_defaults_are_the_seed_systems(clean_env):
    s = load_settings()
    assert s.bigquery_dataset_id == "streaming_data_warehouse_v2"
    assert s.bigquery_table_id == "hourly_sales_aggregation"
    assert s.window_size_seconds == 30
    assert s.publisher_interval == 0.5
    assert s.publisher_max_messages == 0
    assert s.log_level is LogLevel.INFO
    assert s.window_type is WindowType.FIXED
    assert s.accumulation is Accumulation.ACCUMULATING
    assert s.dedupe_horizon_seconds == 600
    assert s.bigquery_table == f"{s.project_id}:streaming_data_warehouse_v2.hourly_sales_aggregation"
    assert s.subscription_path == f"projects/{s.project_id}/subscriptions/{s.pubsub_subscription_id}"


def test_dotenv_then_environment_then_flags(clean_env, monkeypatch):
    (clean_env / ".env").write_text(
        "# a comment\nWINDOW_SIZE_SECONDS=45\nALLOWED_LATENESS_SECONDS=5\n"
        "BIGQUERY_TABLE_ID=from_dotenv\nWINDOW_TYPE=sliding\nSOMETHING_ELSE=ignored\n")
    s = load_settings()
    assert (s.window_size_seconds, s.allowed_lateness_seconds, s.bigquery_table_id,
            s.window_type) == (45, 5, "from_dotenv", WindowType.SLIDING)

    monkeypatch.setenv("WINDOW_SIZE_SECONDS", "60")
    s = load_settings()
    assert s.window_size_seconds == 60 and s.allowed_lateness_seconds == 5

    s = load_settings(window_size_seconds=10, allowed_lateness_seconds=None)
    assert s.window_size_seconds == 10  # the flag wins
    assert s.allowed_lateness_seconds == 5  # an unset flag (None) leaves the setting alone
    assert WindowSpec.from_settings(s).size_seconds == 10

    assert load_settings(env_file=None).bigquery_table_id == "hourly_sales_aggregation"


def test_settings_are_frozen(clean_env):
    s = load_settings()
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance error
        s.window_size_seconds = 1


@pytest.mark.parametrize(("variable", "value"), [
    ("WINDOW_SIZE_SECONDS", "abc"),
    ("WINDOW_SIZE_SECONDS", "0"),
    ("WINDOW_SIZE_SECONDS", "-30"),
    ("WINDOW_SIZE_SECONDS", "2.5"),
    ("ALLOWED_LATENESS_SECONDS", "-1"),
    ("DEDUPE_HORIZON_SECONDS", "0"),
    ("LOG_LEVEL", "LOUD"),
    ("WINDOW_TYPE", "hopping"),
    ("ACCUMULATION", "both"),
    ("LATE_FIRINGS", "maybe"),
    ("PROJECT_ID", "Not_A_Project"),
    ("REGION", "moon"),
    ("PUBSUB_TOPIC_ID", "1starts-with-digit"),
    ("BIGQUERY_TABLE_ID", "has-dash"),
    ("PUBLISHER_INTERVAL", "-0.5"),
    ("PUBLISHER_INTERVAL", "fast"),
    ("PUBLISHER_MAX_MESSAGES", "-1"),
    ("EARLY_FIRING_SECONDS", "-2"),
    ("SESSION_GAP_SECONDS", "0"),
])
def test_a_bad_value_is_one_line_naming_the_variable(clean_env, monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    text = str(caught.value)
    assert text.startswith(f"{variable}:"), text
    assert "\n" not in text
    assert value in text  # says what it got


def test_inconsistent_values_name_the_variable(clean_env, monkeypatch):
    monkeypatch.setenv("WINDOW_SIZE_SECONDS", "30")
    monkeypatch.setenv("WINDOW_PERIOD_SECONDS", "60")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "WINDOW_PERIOD_SECONDS" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_bad_flag_value_is_reported_like_the_environment(clean_env):
    with pytest.raises(ConfigError, match=r"^WINDOW_SIZE_SECONDS:"):
        load_settings(window_size_seconds=-1)


@pytest.mark.subprocess
def test_python_m_txpipe_config_ok(tmp_path):
    (tmp_path / ".env").write_text("WINDOW_SIZE_SECONDS=45\n")
    done = subprocess.run([sys.executable, "-m", "txpipe.config"], cwd=tmp_path,
                          env=subprocess_env(BIGQUERY_TABLE_ID="from_env"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "configuration OK"
    assert "WINDOW_SIZE_SECONDS=45" in lines
    assert "BIGQUERY_TABLE_ID=from_env" in lines
    assert "BIGQUERY_DATASET_ID=streaming_data_warehouse_v2" in lines


@pytest.mark.subprocess
@pytest.mark.parametrize("module", [["txpipe.config"], ["txpipe", "config"]])
def test_python_m_txpipe_config_bad_value_exits_2(tmp_path, module):
    (tmp_path / ".env").write_text("WINDOW_SIZE_SECONDS=thirty\n")
    done = subprocess.run([sys.executable, "-m", *module], cwd=tmp_path, env=subprocess_env(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert "WINDOW_SIZE_SECONDS" in line and "thirty" in line
    assert "Traceback" not in done.stderr


# --- the lab's local read: its estimation band is a local-only setting ----------------------

@pytest.mark.parametrize("value", ["abc", "-1", "3601", "nan"])
def test_a_bad_estimation_band_is_refused_at_start_by_run_local_and_demo(
        clean_env, monkeypatch, capsys, value):
    from txpipe import cli
    from txpipe.lab import demo, local

    (clean_env / "ten.jsonl").write_text("".join(
        f'{{"transaction_id": "t{i}", "amount": 1.5, "timestamp": "2026-11-27T10:00:0{i}Z"}}\n'
        for i in range(10)))
    monkeypatch.setenv("LOCAL_ESTIMATION_BAND_SECONDS", value)
    commands = [
        (cli.main, ["--source", "file", "--input", str(clean_env / "ten.jsonl"), "--sink",
                    "jsonl", "--output", str(clean_env / "out" / "x")]),
        (local.main, ["up", "--port", "0"]),
        (demo.main, ["--in-process", "--seconds", "1"]),
    ]
    for main, argv in commands:
        assert main(argv) == 2, main.__module__
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "LOCAL_ESTIMATION_BAND_SECONDS" in err, err
    assert not (clean_env / "out").exists()  # refused before anything was read or written


def test_the_estimation_band_comes_from_dotenv_and_reaches_the_local_read(clean_env):
    from txpipe import runners

    (clean_env / ".env").write_text("LOCAL_ESTIMATION_BAND_SECONDS=2.5\n")
    settings = load_settings()
    assert settings.local_estimation_band_seconds == 2.5
    assert runners.local_streaming("BundleBasedDirectRunner", settings).band_seconds == 2.5
    assert runners.local_streaming("DataflowRunner", settings) is None


def test_the_estimation_band_is_neither_a_flag_nor_a_flex_template_parameter():
    from txpipe import flex_template
    from txpipe.config import setting_flags

    assert "local_estimation_band_seconds" not in {f.field for f in setting_flags()}
    names = {p["name"] for p in flex_template.metadata()["parameters"]}
    assert not {n for n in names if "band" in n}


def test_every_setting_is_in_the_example_env_and_the_configuration_docs():
    root = Path(__file__).resolve().parent.parent
    example = (root / ".env.example").read_text()
    docs = (root / "docs" / "configuration.md").read_text()
    missing = [name for name in VARIABLES
               if f"{name}=" not in example or f"`{name}`" not in docs]
    assert not missing
