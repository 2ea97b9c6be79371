"""The pinned set of wheels an offline GPU machine needs besides what its Python has.

A GPU machine of the kind users and our checks get has torch (CUDA), numpy, rich, typer,
jinja2, psutil, scipy and matplotlib; the orchestrator also needs the packages in NEEDED and
whatever they require. Downloading those unpinned with --no-deps mixed releases: pydantic
pins pydantic-core exactly, and a pydantic-core of another day left pip refusing the set.
Here the versions come from this project's venv, which pip resolved and our tests ran on:
NEEDED closed over its requirements (markers evaluated for the target Python on Linux x86-64),
less what the GPU machine has, each pinned `name==version`; then every requirement between
them is checked against the pins. scripts/gpu-wheels.sh downloads exactly this list.

    python scripts/gpu_wheels.py [--python-version 3.12]     # prints name==version lines
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import PackageNotFoundError, distribution

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

NEEDED = ("unidiff", "cmaes", "optuna", "pydantic", "docker")
# on the GPU machine already (with what they require): never shadowed from .site
PRESENT = frozenset(canonicalize_name(n) for n in (
    "torch", "triton", "numpy", "rich", "typer", "jinja2", "markupsafe", "psutil", "scipy",
    "matplotlib", "pip", "setuptools", "wheel"))


def environment(python_version: str) -> dict[str, str]:
    """Marker values of the target: CPython `python_version` on Linux x86-64."""
    return {"python_version": python_version, "python_full_version": f"{python_version}.0",
            "implementation_name": "cpython", "platform_python_implementation": "CPython",
            "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
            "platform_machine": "x86_64", "extra": ""}


def requirements(name: str, env: dict[str, str]) -> list[Requirement]:
    """What the installed distribution `name` requires on the target (no extras)."""
    found = []
    for text in distribution(name).requires or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate(env):
            found.append(req)
    return found


def pins(python_version: str = "3.12", needed=NEEDED, present=PRESENT) -> dict[str, str]:
    """{canonical name: installed version} of `needed` and all they require, less `present`.
    PackageNotFoundError names a package this venv lacks (run `make install`)."""
    env, todo, found = environment(python_version), list(needed), {}
    while todo:
        name = canonicalize_name(todo.pop())
        if name in found or name in present:
            continue
        found[name] = distribution(name).version
        todo += [r.name for r in requirements(name, env)]
    return dict(sorted(found.items()))


def conflicts(pinned: dict[str, str], python_version: str = "3.12") -> list[str]:
    """Every requirement between pinned packages that the pinned version does not meet."""
    env, problems = environment(python_version), []
    for name in pinned:
        for req in requirements(name, env):
            other = canonicalize_name(req.name)
            if other in pinned and not req.specifier.contains(Version(pinned[other]),
                                                                 prereleases=True):
                problems.append(f"{name} {pinned[name]} requires {req}, pinned "
                                f"{other}=={pinned[other]}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python-version", default="3.12")
    args = parser.parse_args()
    try:
        pinned = pins(args.python_version)
    except PackageNotFoundError as e:
        print(f"gpu-wheels: {e.name} is not installed in this Python ({sys.executable}): "
              "run `make install` and try again", file=sys.stderr)
        return 1
    problems = conflicts(pinned, args.python_version)
    if problems:
        print("gpu-wheels: the pinned set is not consistent: " + "; ".join(problems),
              file=sys.stderr)
        return 1
    print("\n".join(f"{name}=={version}" for name, version in pinned.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
