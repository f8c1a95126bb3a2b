"""descent: gradient descent three ways (GD, SGD, mini-batch SGD) on linear regression.

The library behind the DVC stages in `stages/`: the validated config (`config`), data
(`data`, `download`, `statistics`), the descent engine (`engines/`, run by `training`),
the closed-form judge (`least_squares`, `judge`), the theory of least squares (`theory`),
the batch-size sweep (`sweep`), the published-figure comparison (`reference`), the figures
(`figure`, `sweep_figure`) and file I/O (`io`). Modules import torch, pandas or
scikit-learn only where they need them, so a stage pays only for what it uses.
"""

import os as _os


def _parent_of(pid: int) -> int | None:
    """The parent of process pid, from /proc (Linux); None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return int(stat.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


# The process that started us (dvc, or the shell dvc runs `cmd` in) and its parent, read
# before any slow import: if dvc dies while we import, io.cli still notices afterwards.
LAUNCHER_PID = _os.getppid()
LAUNCHER_PARENT = _parent_of(LAUNCHER_PID)
