"""The dependency files agree: every requirement of pyproject.toml (core and extras) has an exact
version in constraints.txt inside its bounds, and the environment the tests run in holds those versions
(scripts/setup.sh installs with -c constraints.txt), so what CI tests is what the files declare."""

import re
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import ROOT

tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml with tomllib")

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def pins() -> dict[str, Version]:
    out = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line).groups()
            out[canonicalize_name(name)] = Version(version)
    return out


def requirements(extra: str | None = None) -> list[Requirement]:
    items = PYPROJECT["dependencies"] if extra is None else PYPROJECT["optional-dependencies"][extra]
    return [r for r in map(Requirement, items) if canonicalize_name(r.name) != canonicalize_name(PYPROJECT["name"])]


EXTRAS = [None, *PYPROJECT["optional-dependencies"]]


@pytest.mark.parametrize("extra", EXTRAS, ids=lambda e: e or "core")
def test_every_requirement_is_pinned_inside_its_bounds(extra):
    pinned = pins()
    for req in requirements(extra):
        name = canonicalize_name(req.name)
        assert name in pinned, f"{req.name} ({extra or 'core'}) has no exact version in constraints.txt"
        assert req.specifier.contains(pinned[name], prereleases=True), \
            f"constraints.txt pins {req.name}=={pinned[name]} outside pyproject.toml's {req.specifier}"


def test_the_core_environment_is_the_pinned_one():
    pinned = pins()
    for req in requirements():
        installed = Version(metadata.version(req.name)).base_version  # torch's "+cpu" local tag aside
        assert Version(installed) == pinned[canonicalize_name(req.name)], \
            f"{req.name} {installed} is installed, constraints.txt pins {pinned[canonicalize_name(req.name)]}"


def test_the_all_extra_names_real_extras():
    (everything,) = [Requirement(r) for r in PYPROJECT["optional-dependencies"]["all"]]
    assert everything.extras <= set(PYPROJECT["optional-dependencies"]) - {"all"}
