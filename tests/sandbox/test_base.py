"""The helpers every backend shares: a tree the trial user may read, the trial's PATH."""

from __future__ import annotations

import os

from sandbox.base import SYSTEM_PATH, make_readable, tool_env, trial_path


def test_make_readable_opens_the_tree_but_follows_no_link(tmp_path):
    outside = tmp_path / "secret"
    outside.write_text("key")
    outside.chmod(0o600)
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "train.py").write_text("print(1)\n")
    (tree / "sub" / "train.py").chmod(0o600)
    (tree / "sub").chmod(0o700)
    tree.chmod(0o700)
    (tree / "link").symlink_to(outside)
    make_readable(tree)
    modes = {p: os.stat(p).st_mode & 0o777 for p in (tree, tree / "sub", tree / "sub/train.py")}
    assert modes == {tree: 0o755, tree / "sub": 0o755, tree / "sub/train.py": 0o644}
    assert outside.stat().st_mode & 0o777 == 0o600


def test_the_trials_path_starts_at_its_interpreter():
    assert trial_path("/opt/venv/bin/python", here=False).split(":") == [
        "/opt/venv/bin", *SYSTEM_PATH]
    assert trial_path("python", here=False).split(":") == list(SYSTEM_PATH)  # the image's own
    assert trial_path("/usr/bin/python3", here=False).count("/usr/bin") == 1
    here = trial_path("/opt/venv/bin/python").split(":")
    assert here[0] == "/opt/venv/bin" and all(os.path.isdir(f) for f in here[1:])
    env = tool_env("/opt/venv/bin/python")
    assert env["PATH"] == ":".join(here) and set(env) <= {"PATH", "CC", "CXX"}
