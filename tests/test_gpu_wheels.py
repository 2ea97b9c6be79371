"""`make gpu-wheels` pins one consistent set, and `make gpu-check` reinstalls .site/ when the
wheels change (issue 24): unpinned pydantic and pydantic-core from two release days left pip
refusing the set, and a stale .site/ ran beside new wheels."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_wheels", ROOT / "scripts/gpu_wheels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_pins_are_one_consistent_set_without_what_the_gpu_machine_has():
    gw = load_script()
    pinned = gw.pins("3.12")
    from importlib.metadata import requires, version

    assert {"pydantic", "pydantic-core", "optuna", "cmaes", "docker", "sqlalchemy"} <= set(pinned)
    assert not {"torch", "numpy", "rich", "psutil", "markupsafe"} & set(pinned)
    core = next(r for r in requires("pydantic") if r.startswith("pydantic-core"))
    assert core == f"pydantic-core=={pinned['pydantic-core']}"  # the exact pin it requires
    assert pinned["pydantic"] == version("pydantic")
    assert gw.conflicts(pinned) == []
    # a set from two release days is caught
    assert any("pydantic-core" in p for p in gw.conflicts({**pinned, "pydantic-core": "2.0.0"}))
    # markers are the target's: tomli is alembic's only below 3.11
    names = {v: {r.name for r in gw.requirements("alembic", gw.environment(v))}
             for v in ("3.10", "3.12")}
    assert "tomli" in names["3.10"] and "tomli" not in names["3.12"] and "tomli" not in pinned


def test_the_script_prints_pins_and_refuses_what_the_venv_lacks(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "scripts/gpu_wheels.py")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split()
    assert "optuna==" + load_script().pins()["optuna"] in lines
    assert all("==" in line for line in lines)
    gw = load_script()
    try:
        gw.pins(needed=("no-such-package-here",))
    except Exception as e:  # PackageNotFoundError names it
        assert "no-such-package-here" in str(e)
    else:
        raise AssertionError("a package the venv lacks was pinned")


def wheel(folder: Path, version: str) -> Path:
    """A minimal pure-Python wheel of `arsitecheck` whose module says its version."""
    name = f"arsitecheck-{version}-py3-none-any.whl"
    info = f"arsitecheck-{version}.dist-info"
    files = {"arsitecheck.py": f"VERSION = {version!r}\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: arsitecheck\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                              "Tag: py3-none-any\n"}
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = "\n".join(record) + "\n"
    with zipfile.ZipFile(folder / name, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
    return folder / name


def test_gpu_site_installs_again_only_when_the_wheels_change(tmp_path):
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts/gpu-site.sh", tmp_path / "scripts/gpu-site.sh")
    site = tmp_path / ".site"

    def install():
        done = subprocess.run(["bash", str(tmp_path / "scripts/gpu-site.sh"), sys.executable],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stderr

    assert install() == "" and not site.exists()  # no .whl/: nothing to do
    (tmp_path / ".whl").mkdir()
    old = wheel(tmp_path / ".whl", "1.0")
    assert "1 wheels installed" in install()
    assert "VERSION = '1.0'" in (site / "arsitecheck.py").read_text()
    (site / "marker").write_text("kept while nothing changed")
    assert install() == "" and (site / "marker").exists()
    old.unlink()
    wheel(tmp_path / ".whl", "2.0")  # a new set: the old .site/ goes, all of it
    assert "1 wheels installed" in install()
    assert "VERSION = '2.0'" in (site / "arsitecheck.py").read_text()
    assert not (site / "marker").exists()
    assert not list(site.glob("arsitecheck-1.0.dist-info"))
