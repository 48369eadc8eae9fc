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
