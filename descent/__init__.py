"""descent: gradient descent three ways (GD, SGD, mini-batch SGD) on linear regression.

The library behind the DVC stages in `stages/`: the validated config (`config`), data
(`data`, `download`), the descent engine (`engine`, `training`), the closed-form judge
(`judge`), the published-figure comparison (`reference`), the figure (`figure`) and file
I/O (`io`). Modules import torch, pandas or scikit-learn only where they need them, so a
stage pays only for what it uses.
"""

import os as _os

# The process that started us (dvc, for a stage), read before any slow import: if it dies
# while we import, io.cli still notices after installing its parent-death signal.
LAUNCHER_PID = _os.getppid()
