"""The lock files: what the image and CI install is what pyproject.toml's ranges admit, and the
pinned livekit-api refuses a webhook token without an expiry."""

from __future__ import annotations

import re
import tomllib

import jwt
import pytest
from livekit import api
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from provisioning.server_config import DEV_API_KEY, DEV_API_SECRET
from tests.conftest import ROOT

pytestmark = pytest.mark.unit

LOCKS = {
    "image.lock": ("openai", "pipeline"),
    "dev.lock": ("openai", "pipeline", "dev"),
}
# The image's Python and platform, where the locks' markers are evaluated.
TARGET: dict[str, str] = {
    **{k: str(v) for k, v in default_environment().items()},
    "python_version": "3.11",
    "python_full_version": "3.11.9",
}


def pins(lock: str) -> dict[str, list[str]]:
    """Each package's pinned versions whose markers hold on the image's Python."""
    found: dict[str, list[str]] = {}
    text = (ROOT / "requirements" / lock).read_text()
    for line in text.splitlines():
        if not re.match(r"^[A-Za-z0-9]", line):
            continue
        req = Requirement(line.split(" \\")[0])
        if req.marker is None or req.marker.evaluate(TARGET):
            [spec] = req.specifier
            found.setdefault(canonicalize_name(req.name), []).append(spec.version)
    return found


def requirements(extras: tuple[str, ...]) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + [
        d for e in extras for d in project["optional-dependencies"][e]
    ]
    return [Requirement(line) for line in lines]


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_every_range_of_pyproject_admits_its_pin(lock: str) -> None:
    pinned = pins(lock)
    for req in requirements(LOCKS[lock]):
        if req.marker is not None and not req.marker.evaluate(TARGET):
            continue
        versions = pinned.get(canonicalize_name(req.name))
        assert versions, f"{req.name} is not in requirements/{lock}: run scripts/lock.sh"
        assert all(req.specifier.contains(v) for v in versions), (
            f"{lock} pins {req.name} {versions}, outside {req.specifier}: run scripts/lock.sh"
        )


def test_the_locks_are_what_the_image_and_ci_install() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "--require-hashes -r requirements/image.lock" in dockerfile
    install = (ROOT / "scripts" / "install_deps.sh").read_text()
    assert "--require-hashes -r requirements/dev.lock" in install


def test_the_pinned_livekit_api_refuses_a_token_without_expiry() -> None:
    """livekit-api 1.2.0 and 1.2.1 verified a token without `exp`, which then never expires."""
    token = jwt.encode(
        {"iss": DEV_API_KEY, "sub": "livekit", "sha256": "x"}, DEV_API_SECRET, algorithm="HS256"
    )
    with pytest.raises(jwt.MissingRequiredClaimError):
        api.TokenVerifier(DEV_API_KEY, DEV_API_SECRET).verify(token)
