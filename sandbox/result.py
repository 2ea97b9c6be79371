"""What a trial's log says: the metrics of its summary block.

train.py ends with a line `---` followed by `key: value` lines. Only the LAST such block
counts, so a line printed mid-run cannot fake a result; a block that is followed by anything
but further summary lines is not a summary block at all.
"""

from __future__ import annotations

import re

_LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*):\s*(\S.*?)\s*$")


def parse_summary(log: str) -> dict[str, float | str]:
    """The metrics of the last `---` block that runs to the end of the log; {} if none."""
    lines = log.rstrip("\n").splitlines()
    for start in range(len(lines) - 1, -1, -1):
        if lines[start].strip() != "---":
            continue
        metrics: dict[str, float | str] = {}
        for line in lines[start + 1:]:
            m = _LINE.match(line)
            if not m:
                return {}  # something else followed the block: it was not the summary
            key, raw = m.groups()
            try:
                metrics[key] = float(raw)
            except ValueError:
                metrics[key] = raw
        return metrics
    return {}
