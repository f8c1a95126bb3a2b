"""User errors, the stage entry point, and files written atomically as strict JSON/CSV."""
from __future__ import annotations

import functools
import json
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
# Temporaries live where neither git nor DVC looks (.dvc/tmp is DVC's own scratch space,
# git-ignored), on the same file system as the outputs so the final rename is atomic.
SCRATCH = ROOT / ".dvc" / "tmp" / "descent"


class UserError(Exception):
    """A problem the user can fix (bad params, bad data, missing device, no network).

    Stages print its message as one line and exit non-zero, without a traceback.
    """


def _end_with_parent() -> None:
    """On Linux, ask the kernel to end this process when its parent (dvc) dies.

    Without it, SIGKILL of `dvc` leaves the stage running unsupervised, and the next
    `dvc repro` starts a second writer on the same outputs.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    from descent import LAUNCHER_PID

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != LAUNCHER_PID:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _clean_stale_temporaries() -> None:
    """Remove temporaries left by writers that were killed (their pid is gone)."""
    if not SCRATCH.is_dir():
        return
    import shutil

    for stale in SCRATCH.iterdir():
        pid = stale.name.split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def cli(main: Callable[..., Any]) -> Callable[[], None]:
    """Wrap a stage's main: a UserError becomes one line on stderr and exit 1."""

    @functools.wraps(main)
    def run() -> None:
        _end_with_parent()
        _clean_stale_temporaries()
        try:
            main(*sys.argv[1:])
        except UserError as error:
            stage = os.environ.get("DVC_STAGE") or Path(sys.argv[0]).stem
            print(f"error [{stage}]: {error}", file=sys.stderr)
            sys.exit(1)
        except KeyboardInterrupt:
            sys.exit(130)

    return run


def relative(path: Path) -> str:
    """path relative to the project root when inside it, for messages."""
    path = Path(path)
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call write(tmp) on a temporary file, then rename it to path.

    A crash or error midway leaves the previous file (if any) untouched, and no temporary
    inside an output folder that DVC or git would see.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = SCRATCH if path.is_relative_to(ROOT) else path.parent
    scratch.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f"{os.getpid()}-", suffix=f"-{path.name}", dir=scratch)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, FILE_MODE)  # mkstemp makes 0600; give the usual mode
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: Path, data: Any) -> None:
    """Strict JSON (no NaN/Infinity tokens), sorted keys, stable bytes."""
    text = json.dumps(data, indent=2, sort_keys=True, allow_nan=False)
    write_text(path, text + "\n")


def write_csv(path: Path, frame: Any, **to_csv_options: Any) -> None:
    """Write a pandas DataFrame as CSV, refusing NaN/inf so plot data stays valid."""
    import numpy as np

    numeric = frame.select_dtypes("number").to_numpy(dtype=float)
    if numeric.size and not np.isfinite(numeric).all():
        raise ValueError(f"refusing to write non-finite values to {path}")
    atomic_write(path, lambda tmp: frame.to_csv(
        tmp, index=False, lineterminator="\n", **to_csv_options))


def write_arrays(path: Path, arrays: dict[str, Any]) -> None:
    """numpy arrays in one .npz file (np.load reads it), with stable bytes: np.savez stamps
    each member with the current time, so the same arrays would give another file."""
    import zipfile

    import numpy as np

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, array in arrays.items():
                member = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                member.compress_type = zipfile.ZIP_DEFLATED
                with archive.open(member, "w", force_zip64=True) as out:
                    np.lib.format.write_array(out, np.asarray(array), allow_pickle=False)

    atomic_write(path, write)


def read_json(path: Path, writer: str = "") -> Any:
    """A JSON file a stage wrote; a damaged one (truncated, hand-edited) is a user error that
    names the stage `writer` which rebuilds it."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise damaged(path, writer) from None


def damaged(path: Path, writer: str) -> UserError:
    rebuild = f"`dvc repro --force {writer}`" if writer else "the stage that writes it"
    return UserError(f"{relative(path)} is damaged (truncated or edited?); rebuild it with "
                     f"{rebuild}")
