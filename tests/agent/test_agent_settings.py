"""The worker's settings and its start-up validation."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from agent.models import validate_stack
from config.agent_settings import DEFAULT_TRANSCRIPT_PATH, load_agent_settings
from config.settings import DEFAULT_AGENT_NAME, SettingsError, load_settings
from devstack.processes import ROOT

pytestmark = pytest.mark.unit

LIVEKIT = {
    "LIVEKIT_URL": "ws://127.0.0.1:7880",
    "LIVEKIT_API_KEY": "devkey",
    "LIVEKIT_API_SECRET": "s" * 32,
}


def test_defaults_share_the_dispatchers_agent_name() -> None:
    agent = load_agent_settings({**LIVEKIT, "OPENAI_API_KEY": "sk-test"})
    assert agent.agent_name == DEFAULT_AGENT_NAME == load_settings(LIVEKIT).agent_name
    assert agent.stack == "openai-realtime"
    assert agent.transcript_path == DEFAULT_TRANSCRIPT_PATH
    assert agent.persona_wait_s == 2.0


def test_one_agent_name_setting_for_both_sides() -> None:
    env = {**LIVEKIT, "AGENT_NAME": "maya-line", "AGENT_STACK": "fake"}
    assert load_agent_settings(env).agent_name == load_settings(env).agent_name == "maya-line"


def test_missing_keys_and_bad_values_are_listed_together() -> None:
    with pytest.raises(SettingsError) as err:
        load_agent_settings(
            {
                **LIVEKIT,
                "AGENT_STACK": "pipeline",
                "AGENT_PERSONA_WAIT_S": "-1",
                "AGENT_NAME": "a b",
            }
        )
    problems = "\n".join(err.value.problems)
    for name in ("OPENAI_API_KEY", "DEEPGRAM_API_KEY", "CARTESIA_API_KEY"):
        assert f"{name} is required by AGENT_STACK=pipeline" in problems
    assert "AGENT_PERSONA_WAIT_S" in problems
    assert "AGENT_NAME" in problems


def test_unknown_stack_is_rejected() -> None:
    with pytest.raises(SettingsError, match="AGENT_STACK='gpt' must be one of"):
        load_agent_settings({**LIVEKIT, "AGENT_STACK": "gpt"})


def test_api_keys_stay_out_of_repr() -> None:
    settings = load_agent_settings({**LIVEKIT, "OPENAI_API_KEY": "sk-very-secret"})
    assert "sk-very-secret" not in repr(settings)
    assert "s" * 32 not in repr(settings)


def test_fake_stack_needs_no_plugin_or_key() -> None:
    validate_stack(load_agent_settings({**LIVEKIT, "AGENT_STACK": "fake"}))


def test_worker_without_its_api_key_fails_at_start_with_one_clear_message() -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update({**LIVEKIT, "AGENT_STACK": "openai-realtime"})
    done = subprocess.run(
        [sys.executable, "-m", "agent"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "OPENAI_API_KEY is required by AGENT_STACK=openai-realtime" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_call_store_is_off_without_mongo_uri_and_its_uri_stays_out_of_repr() -> None:
    off = load_agent_settings({**LIVEKIT, "AGENT_STACK": "fake"})
    assert not off.call_store.enabled
    uri = "mongodb://writer:s3cret@db.internal:27017/"
    on = load_agent_settings({**LIVEKIT, "AGENT_STACK": "fake", "MONGO_URI": uri})
    assert on.call_store.enabled
    assert (on.call_store.database, on.call_store.collection) == ("persona_dispatcher", "calls")
    assert "s3cret" not in repr(on)


def test_a_bad_mongo_uri_and_no_transcript_anywhere_are_refused() -> None:
    with pytest.raises(SettingsError) as err:
        load_agent_settings(
            {**LIVEKIT, "AGENT_STACK": "fake", "MONGO_URI": "http://db", "TRANSCRIPT_FILE": "no"}
        )
    assert "MONGO_URI='http://db' must start with mongodb or mongodb+srv://" in str(err.value)
    with pytest.raises(SettingsError, match="TRANSCRIPT_FILE=false needs MONGO_URI"):
        load_agent_settings({**LIVEKIT, "AGENT_STACK": "fake", "TRANSCRIPT_FILE": "false"})
