"""Shared helpers for the pipeline stages: params, user errors, atomic writes.

Kept free of heavy imports (torch, scikit-learn) so every stage starts fast.
"""
from __future__ import annotations

import functools
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import yaml

ROOT = Path(__file__).resolve().parent.parent
PARAMS_FILE = ROOT / "params.yaml"
VARIANTS = ("gd", "sgd", "minibatch")
# loss = scale * mean((y_hat - y)^2): d2l's half squared loss, or nn.MSELoss.
LOSS_SCALES = {"half_squared": 0.5, "mse": 1.0}


class UserError(Exception):
    """A problem the user can fix (bad params, bad data, missing device, no network).

    Stages print its message as one line and exit non-zero, without a traceback.
    """


def cli(main: Callable[..., None]) -> Callable[[], None]:
    """Wrap a stage's main so a UserError becomes one clear line on stderr and exit 1."""

    @functools.wraps(main)
    def run() -> None:
        try:
            main(*sys.argv[1:])
        except UserError as error:
            stage = os.environ.get("DVC_STAGE") or Path(sys.argv[0]).stem
            print(f"error [{stage}]: {error}", file=sys.stderr)
            sys.exit(1)
        except KeyboardInterrupt:
            sys.exit(130)

    return run


def load_params(path: Path = PARAMS_FILE) -> dict[str, Any]:
    try:
        params = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} not found: run the stage from the project root") from None
    except yaml.YAMLError as error:
        raise UserError(f"{path.name} is not valid YAML ({error}); fix the file") from None
    if not isinstance(params, dict):
        raise UserError(f"{path.name} must be a mapping of keys to values")
    return params


def require(params: dict[str, Any], dotted_key: str) -> Any:
    """params['a']['b'] for 'a.b', or a UserError naming the missing key."""
    node: Any = params
    for part in dotted_key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise UserError(f"params.yaml has no '{dotted_key}'; add it (see README)")
        node = node[part]
    return node


def positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{name} must be a positive integer, got {value!r}; fix params.yaml")
    return value


def positive_float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 \
            or not math.isfinite(value):
        raise UserError(f"{name} must be a positive number, got {value!r}; fix params.yaml")
    return float(value)


def finite_float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{name} must be a finite number, got {value!r}; fix params.yaml")
    return float(value)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


CURRENT_UMASK = _current_umask()


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call write(tmp) on a temporary file beside path, then rename it into place.

    A crash or error midway leaves the previous file (if any) untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~CURRENT_UMASK)  # mkstemp makes 0600; give the usual mode
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: Path, data: Any) -> None:
    """Strict JSON (no NaN/Infinity tokens), sorted keys, stable bytes."""
    text = json.dumps(data, indent=2, sort_keys=True, allow_nan=False)
    write_text(path, text + "\n")


def write_csv(path: Path, frame: "Any", **to_csv_options: Any) -> None:
    """Write a pandas DataFrame as CSV, refusing NaN/inf so plot data stays valid."""
    import numpy as np

    numeric = frame.select_dtypes("number").to_numpy(dtype=float)
    if numeric.size and not np.isfinite(numeric).all():
        raise ValueError(f"refusing to write non-finite values to {path}")
    atomic_write(path, lambda tmp: frame.to_csv(
        tmp, index=False, lineterminator="\n", **to_csv_options))


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())
