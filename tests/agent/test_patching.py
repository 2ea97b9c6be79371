"""agent/edit/patching.py: diffs apply by content; anything but an edit of train.py is refused."""

from __future__ import annotations

import difflib
import re

import pytest

from agent.edit.actions import unified_diff
from agent.edit.patching import Hunk, PatchError, apply_patch, check_patch

SOURCE = '''"""Tiny train.py for the patching tests."""

import math

# --- hyperparameters ---
LEARNING_RATE = 0.01  # peak learning rate
BATCH_SIZE = 32  # sequences per step
DEPTH = 4  # transformer layers
WARMUP_STEPS = 100  # linear warmup steps
# --- end hyperparameters ---


def lr_at(step):
    if step < WARMUP_STEPS:
        return LEARNING_RATE * step / WARMUP_STEPS
    return LEARNING_RATE * math.cos(step)


def train():
    for step in range(10):
        lr = lr_at(step)
        print(step, lr)


def evaluate():
    for step in range(10):
        lr = lr_at(step)
        print(step, lr)
    print("---")
'''

NEW_LR = SOURCE.replace("LEARNING_RATE = 0.01", "LEARNING_RATE = 0.02")


def diff(old: str, new: str, path: str = "train.py", n: int = 3) -> str:
    return "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True),
                                        f"a/{path}", f"b/{path}", n=n))


def refusal(source: str, patch: str) -> str:
    with pytest.raises(PatchError) as info:
        apply_patch(source, patch)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message and message
    return message


# --- what applies ---


def test_clean_difflib_diff_applies():
    loop = "    for step in range(10):\n        lr = lr_at(step)\n        print(step, lr)\n"
    new = NEW_LR.replace(loop + '    print("---")', '    print("done")\n    print("---")')
    assert new != NEW_LR
    assert apply_patch(SOURCE, unified_diff(SOURCE, new)) == new
    assert apply_patch(SOURCE, diff(SOURCE, new, n=1).replace("a/train.py", "./train.py")) == new
    with pytest.raises(PatchError, match="hunk 2 matches train.py in 2 places"):
        apply_patch(SOURCE, diff(SOURCE, new, n=0))  # no context: the removed loop is in two places


def test_check_patch_returns_hunks_without_touching_anything():
    hunks = check_patch(diff(SOURCE, NEW_LR))
    assert len(hunks) == 1 and isinstance(hunks[0], Hunk)
    assert "LEARNING_RATE = 0.01  # peak learning rate" in hunks[0].before
    assert "LEARNING_RATE = 0.02  # peak learning rate" in hunks[0].after
    assert hunks[0].start == 3


@pytest.mark.parametrize("header", [
    "@@ -1,99 +1,1 @@",  # counts too large: unidiff refuses
    "@@ -6,1 +6,1 @@",  # counts too small: unidiff would silently drop the change lines
    "@@ -600,7 +600,7 @@",  # stale line numbers
    "@@ ... @@",
    "@@",
])
def test_wrong_or_missing_hunk_numbers_apply(header):
    patch = re.sub(r"^@@.*$", header, diff(SOURCE, NEW_LR), flags=re.M)
    assert apply_patch(SOURCE, patch) == NEW_LR


def test_blank_context_lines_survive_wrong_counts():
    new = SOURCE.replace("def train():", "def fit():")
    for header in ("@@ -14,1 +14,1 @@", "@@ -14,9 +14,9 @@"):
        patch = re.sub(r"^@@.*$", header, diff(SOURCE, new), flags=re.M)
        assert "\n \n \n-def train():" in patch
        assert apply_patch(SOURCE, patch.replace("\n \n", "\n\n")) == new  # blank, no space


def test_fenced_git_diff_with_prose_and_no_final_newline_applies():
    body = diff(SOURCE, NEW_LR).split("\n", 2)[2].rstrip("\n")
    patch = ("Lower-risk change: double the learning rate.\n\n```diff\n"
             "diff --git a/train.py b/train.py\nindex 83db48f..bf269f4 100644\n"
             f"--- a/train.py\n+++ b/train.py\n{body}\n```\n\n- it should converge faster\n")
    assert apply_patch(SOURCE, patch) == NEW_LR
    assert apply_patch(SOURCE, diff(SOURCE, NEW_LR).rstrip("\n")) == NEW_LR
    at_end = SOURCE.replace('"---"', '"==="')  # blank lines after the last hunk are no context
    assert apply_patch(SOURCE, f"```diff\n{diff(SOURCE, at_end)}\n\n```\n") == at_end
    # Outside the fence, prose that looks like a header is not read as one.
    assert apply_patch(SOURCE, patch + "diff --git output is long, so I kept one hunk\n") == NEW_LR
    assert apply_patch(SOURCE, patch + "@@ is the hunk header\n") == NEW_LR


def test_headerless_hunk_applies_to_train_py():
    patch = "@@\n # --- hyperparameters ---\n-LEARNING_RATE = 0.01  # peak learning rate\n" \
            "+LEARNING_RATE = 0.02  # peak learning rate\n BATCH_SIZE = 32  # sequences per step\n"
    assert apply_patch(SOURCE, patch) == NEW_LR


def test_trailing_whitespace_in_context_is_tolerated():
    patch = diff(SOURCE, NEW_LR).replace(" BATCH_SIZE = 32  # sequences per step\n",
                                         " BATCH_SIZE = 32  # sequences per step   \n")
    assert patch != diff(SOURCE, NEW_LR)
    assert apply_patch(SOURCE, patch) == NEW_LR


def test_wrong_indentation_is_tolerated_and_added_lines_reindented():
    # The model dropped the function's indentation and indented its addition relative to it.
    patch = ("--- a/train.py\n+++ b/train.py\n@@ -1,3 +1,4 @@\n def evaluate():\n"
             " for step in range(10):\n-    lr = lr_at(step)\n+    lr = 0.5 * lr_at(step)\n"
             "+    assert lr >= 0\n     print(step, lr)\n print(\"---\")\n")
    want = SOURCE.replace("        lr = lr_at(step)\n        print(step, lr)\n    print(\"---\")",
                          "        lr = 0.5 * lr_at(step)\n        assert lr >= 0\n"
                          "        print(step, lr)\n    print(\"---\")")
    assert want != SOURCE
    assert apply_patch(SOURCE, patch) == want


def test_exact_match_wins_over_tolerant_ones():
    source = "def f():\n    x = 1\n\nx = 1\n"
    patch = "--- a/train.py\n+++ b/train.py\n@@\n-x = 1\n+x = 2\n"
    assert apply_patch(source, patch) == "def f():\n    x = 1\n\nx = 2\n"


def test_second_hunk_sees_the_first_hunks_change():
    new = SOURCE.replace("DEPTH = 4  # transformer layers\n",
                         "DEPTH = 4  # transformer layers\nHEADS = 2  # attention heads\n")
    first = diff(SOURCE, new, n=1)
    final = new.replace("HEADS = 2  # attention heads\n", "HEADS = 8  # attention heads\n")
    second = diff(new, final, n=1).split("\n", 2)[2]  # written against the first hunk's result
    assert apply_patch(SOURCE, first + second) == final


def test_a_failing_later_hunk_rejects_the_whole_diff():
    bad = "@@\n-    print(step, lr, 'absent')\n+    print(step)\n"
    message = refusal(SOURCE, diff(SOURCE, NEW_LR) + bad)
    assert message.startswith("hunk 2 does not match train.py")


def test_two_sections_for_train_py_apply_in_order():
    new = NEW_LR.replace("BATCH_SIZE = 32", "BATCH_SIZE = 64")
    assert apply_patch(SOURCE, diff(SOURCE, NEW_LR) + diff(NEW_LR, new)) == new


def test_pure_insertion_uses_the_stated_line():
    patch = "--- a/train.py\n+++ b/train.py\n@@ -2,0 +3,1 @@\n+import os\n"
    assert apply_patch(SOURCE, patch) == SOURCE.replace("import math\n", "import os\nimport math\n")


def test_crlf_source_keeps_crlf():
    source, want = SOURCE.replace("\n", "\r\n"), NEW_LR.replace("\n", "\r\n")
    assert apply_patch(source, diff(SOURCE, NEW_LR)) == want  # the model writes LF
    assert apply_patch(source, diff(source, want)) == want  # difflib on the file itself


def test_missing_final_newline_is_kept():
    source, want = SOURCE.rstrip("\n"), SOURCE.rstrip("\n").replace('"---"', '"==="')
    assert apply_patch(source, diff(SOURCE, want + "\n")) == want  # the model adds the newline
    marked = diff(SOURCE, want + "\n").replace('"===")\n', '"===")\n\\ No newline at end of file\n')
    assert "No newline" in marked and apply_patch(source, marked) == want
    appended = "--- a/train.py\n+++ b/train.py\n@@\n     print(\"---\")\n+    print(\"end\")\n"
    assert apply_patch(source, appended) == source + '\n    print("end")'
    assert apply_patch(SOURCE, appended) == SOURCE + '    print("end")\n'


def test_nothing_on_disk_changes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text(SOURCE)
    assert apply_patch(SOURCE, diff(SOURCE, NEW_LR)) == NEW_LR
    with pytest.raises(PatchError):
        apply_patch(SOURCE, diff(SOURCE, NEW_LR, path="../train.py"))
    assert [p.name for p in tmp_path.iterdir()] == ["train.py"]
    assert (tmp_path / "train.py").read_text() == SOURCE


# --- what is refused ---

GOOD = diff(SOURCE, NEW_LR)
CREATE = "diff --git a/new.py b/new.py\nnew file mode 100644\n--- /dev/null\n+++ b/new.py\n" \
         "@@ -0,0 +1 @@\n+x = 1\n"

REFUSED = {
    "other file": (GOOD.replace("train.py", "prepare.py"), "'a/prepare.py'"),
    "parent dir": (GOOD.replace("a/train.py", "a/../train.py"), "'a/../train.py'"),
    "dotdot": (GOOD.replace("a/train.py", "../train.py").replace("b/train.py", "../train.py"),
               "'../train.py' leaves the repository"),
    "absolute": (GOOD.replace("a/train.py", "/etc/passwd"), "'/etc/passwd'"),
    "second file": (GOOD + "--- a/prepare.py\n+++ b/prepare.py\n@@\n-x = 1\n+x = 2\n",
                    "'a/prepare.py'"),
    "create": ("--- /dev/null\n+++ b/train.py\n@@ -0,0 +1 @@\n+x = 1\n", "creates"),
    "create git": (CREATE, "creates"),
    "delete": (diff(SOURCE, "").replace("+++ b/train.py", "+++ /dev/null"), "deletes"),
    "rename": (GOOD.replace("+++ b/train.py", "+++ b/train2.py"), "renames 'a/train.py'"),
    "rename git": ("diff --git a/train.py b/model.py\nsimilarity index 100%\n"
                   "rename from train.py\nrename to model.py\n", "renames a file ('train.py')"),
    "copy git": ("diff --git a/train.py b/train.py\ncopy from prepare.py\ncopy to train.py\n",
                 "copies a file"),
    "binary": ("diff --git a/train.py b/train.py\nindex 1..2 100644\n"
               "Binary files a/train.py and b/train.py differ\n", "binary"),
    "git binary": ("diff --git a/train.py b/train.py\nGIT binary patch\nliteral 3\nKcmZ?wKm`Bh\n",
                   "binary"),
    "git header names another file": ("diff --git a/prepare.py b/prepare.py\n" + GOOD,
                                      "'a/prepare.py'"),
    "garbage": ("Sure! I lowered the learning rate.\nLet me know.", "no diff found"),
    "empty": ("", "no diff found"),
    "headers only": ("--- a/train.py\n+++ b/train.py\n", "no diff found"),
    "no-op": (GOOD.replace("+LEARNING_RATE = 0.02", "+LEARNING_RATE = 0.01"),
              "the diff changes nothing"),
    "context only": ("@@\n DEPTH = 4  # transformer layers\n", "the diff changes nothing"),
    "insertion without numbers": ("@@\n+import os\n", "has no line numbers"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_refusals_name_the_problem_in_one_line(case):
    patch, expected = REFUSED[case]
    assert expected in refusal(SOURCE, patch)


def test_unmatched_hunk_quotes_the_missing_lines():
    patch = ("--- a/train.py\n+++ b/train.py\n@@ -5,3 +5,3 @@\n # --- hyperparameters ---\n"
             "-LEARNING_RATE = 0.1  # peak learning rate\n-    x = 1\n+LEARNING_RATE = 0.2\n")
    message = refusal(SOURCE, patch)
    assert message.startswith("hunk 1 does not match train.py: could not find these lines: ")
    assert "'LEARNING_RATE = 0.1  # peak learning rate' / '    x = 1'" in message
    assert "# --- hyperparameters ---'" not in message  # present lines are not blamed


def test_lines_present_but_not_together_are_quoted():
    patch = "@@\n DEPTH = 4  # transformer layers\n-LEARNING_RATE = 0.01  # peak learning rate\n"
    message = refusal(SOURCE, patch)
    assert "not consecutive in train.py: 'DEPTH = 4  # transformer layers' / " in message


def test_ambiguous_hunk_names_the_count():
    patch = ("--- a/train.py\n+++ b/train.py\n@@ -20,2 +20,2 @@\n     for step in range(10):\n"
             "-        lr = lr_at(step)\n+        lr = 2 * lr_at(step)\n")
    message = refusal(SOURCE, patch)
    assert "hunk 1 matches train.py in 2 places (lines 20, 26)" in message
    assert "add more unchanged lines" in message
    unique = patch.replace("@@ -20,2 +20,2 @@\n", "@@\n def evaluate():\n")
    assert apply_patch(SOURCE, unique).count("lr = 2 * lr_at(step)") == 1


def test_multiline_reason_is_folded_into_one_line():
    assert str(PatchError("first\nsecond\r\n third")) == "first second third"


# --- an excerpt's markers (agent/edit/excerpt.py) ---

MARKER = "# ... lines 13-17 of train.py are not shown here: no diff hunk may cross this line ..."


def test_a_hunk_crossing_an_elision_marker_is_refused():
    """Issue 28: the model saw train.py in part; a hunk whose unchanged or removed lines hold
    a marker line spans lines it never saw, and is refused naming the marker, even where the
    same hunk without the marker would match."""
    crossing = ("--- a/train.py\n+++ b/train.py\n@@ -10,3 +10,3 @@\n"
                f" # --- end hyperparameters ---\n {MARKER}\n-def train():\n"
                "+def train():  # shorter\n")
    with pytest.raises(PatchError) as info:
        apply_patch(SOURCE, crossing, elided=[MARKER])
    message = str(info.value)
    assert message.startswith("hunk 1 crosses the marker '# ... lines 13-17 of train.py")
    assert "not shown" in message and "\n" not in message
    removed = crossing.replace(f" {MARKER}\n", f"-{MARKER}\n")
    with pytest.raises(PatchError, match="hunk 1 crosses the marker"):
        apply_patch(SOURCE, removed, elided=["  " + MARKER])  # whitespace does not matter
    # a hunk made of shown lines applies as before, markers or not
    assert apply_patch(SOURCE, diff(SOURCE, NEW_LR), elided=[MARKER]) == NEW_LR
