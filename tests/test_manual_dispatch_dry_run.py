"""`persona-dispatch-call --dry-run` right after a clone: no environment, no .env, no LiveKit."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from devstack.processes import ROOT

pytestmark = pytest.mark.service


def dry_run(clone: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The command in `clone`, with exactly `env` as its environment (no PATH, no HOME)."""
    return subprocess.run(
        [sys.executable, "-m", "operator_tools.manual_dispatch", "--dry-run", *args],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """What the command reads of a fresh checkout (user-mapping/), and nothing else: no .env."""
    shutil.copytree(ROOT / "user-mapping", tmp_path / "user-mapping")
    return tmp_path


def test_with_no_environment_at_all_it_prints_the_persona_a_number_gets(clone: Path) -> None:
    """The default persona API cannot know 9999999999 (or cannot be reached): the default."""
    done = dry_run(clone, {}, "--number", "9999999999")
    assert done.returncode == 0, done.stderr
    assert "persona       default from default\n" in done.stdout
    assert "name          Friday  (id -)\n" in done.stdout
    assert "dry run       LiveKit not touched\n" in done.stdout
    assert "Traceback" not in done.stderr


def test_without_livekit_settings_it_resolves_from_the_user_mapping_files(clone: Path) -> None:
    done = dry_run(clone, {"PERSONA_API_BASE": "off"}, "--json")
    assert done.returncode == 0, done.stderr
    summary = orjson.loads(done.stdout)
    assert summary["number"] == "8655701159"
    assert (summary["status"], summary["source"]) == (
        "file",
        "user-mapping/num_8655701159.json",
    )
    assert (summary["persona_id"], summary["name"]) == ("prs_3001", "Priya")
    assert summary["dry_run"] is True
    assert summary["dispatch_id"] is None


def test_a_real_dispatch_still_needs_the_livekit_settings(clone: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "operator_tools.manual_dispatch"],
        cwd=clone,
        env={},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 4
    assert "LIVEKIT_URL is required" in done.stderr


def test_an_over_budget_file_persona_shows_what_the_set_up_would_write(clone: Path) -> None:
    """A persona that does not fit METADATA_BUDGET_BYTES: the set-up writes the default, so the
    dry run shows the default (not the file's persona, and no traceback)."""
    persona = {"personality": "Be thorough. " * 400, "name": "Verbose"}
    (clone / "user-mapping" / "num_9000000111.json").write_bytes(orjson.dumps(persona))
    env = {"PERSONA_API_BASE": "off", "METADATA_BUDGET_BYTES": "2048"}
    done = dry_run(clone, env, "--number", "9000000111", "--json")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    summary = orjson.loads(done.stdout)
    assert (summary["status"], summary["source"], summary["name"]) == (
        "default",
        "default",
        "Friday",
    )
    assert summary["metadata_bytes"] <= 2048


def test_a_default_persona_file_without_a_persona_is_one_clear_error(clone: Path) -> None:
    (clone / "default.json").write_text('{"campaigns": "oops"}')
    env = {"PERSONA_API_BASE": "off", "DEFAULT_PERSONA_FILE": "default.json"}
    done = dry_run(clone, env, "--number", "9000000111")
    assert done.returncode == 4
    assert "Traceback" not in done.stderr
    assert "DEFAULT_PERSONA_FILE='default.json' holds no usable persona" in done.stderr
    assert "campaigns is not a list" in done.stderr


def test_the_service_refuses_to_start_on_it_with_one_clear_error(clone: Path) -> None:
    (clone / "default.json").write_text('{"campaigns": "oops"}')
    env = {
        "LIVEKIT_URL": "http://127.0.0.1:7880",
        "LIVEKIT_API_KEY": "devkey",
        "LIVEKIT_API_SECRET": "s" * 32,
        "PORT": "0",
        "DEFAULT_PERSONA_FILE": "default.json",
    }
    done = subprocess.run(
        [sys.executable, "-m", "webhooks"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "DEFAULT_PERSONA_FILE='default.json' holds no usable persona" in done.stderr
