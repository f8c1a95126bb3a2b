"""User errors, the stage entry point, and files written atomically as strict JSON/CSV."""
from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, NoReturn

ROOT = Path(__file__).resolve().parent.parent
# Temporaries live where neither git nor DVC looks (.dvc/tmp is DVC's own scratch space,
# git-ignored), on the same file system as the outputs so the final rename is atomic.
SCRATCH = ROOT / ".dvc" / "tmp" / "descent"


class UserError(Exception):
    """A problem the user can fix (bad params, bad data, missing device, no network).

    Stages print its message as one line and exit non-zero, without a traceback.
    """


def _end_with_parent() -> None:
    """On Linux, ask the kernel to end this process when dvc dies.

    Without it, SIGKILL of `dvc` leaves the stage running unsupervised, and the next
    `dvc repro` starts a second writer on the same outputs. The signal is SIGKILL, not
    SIGTERM: a SIGTERM ignored by whoever started dvc (a CI runner, `trap '' TERM`) stays
    ignored in every process below it, and the stage installs no handler that SIGTERM
    would run. Half-written outputs are only ever temporaries, removed by the next run.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    from descent import LAUNCHER_PARENT, LAUNCHER_PID

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != LAUNCHER_PID or _orphaned_by_dvc(LAUNCHER_PID):
        _end_now()  # it died before prctl took effect
    if _started_by_dvc(LAUNCHER_PID) and LAUNCHER_PARENT is not None:
        # dvc runs `cmd` through $SHELL, else /bin/sh; Debian's sh (dash) forks the command
        # rather than exec it, so our parent is that shell, which outlives dvc: watch dvc.
        if _orphaned_by_dvc(LAUNCHER_PARENT):
            _end_now()
        _end_with(LAUNCHER_PARENT, LAUNCHER_PID)


def _started_by_dvc(pid: int) -> bool:
    """Process pid was started by dvc for this stage (a shell running `cmd`): dvc gives each
    command DVC_STAGE, which dvc's own environment does not hold."""
    stage = os.environ.get("DVC_STAGE")
    if stage is None or pid == 1:
        return False
    try:
        started_with = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"DVC_STAGE={stage}".encode() in started_with


def _orphaned_by_dvc(pid: int) -> bool:
    """pid should be dvc (which sets DVC_STAGE) but is init: dvc died even before Python read
    who launched us, and we were handed to init. Only a dvc that is itself pid 1 (a
    container's command) is a launcher at pid 1."""
    if "DVC_STAGE" not in os.environ or pid != 1:
        return False
    try:
        return b"dvc" not in Path("/proc/1/cmdline").read_bytes()
    except OSError:  # no /proc/1 to read: keep running rather than guess
        return False


def _end_with(dvc: int, shell: int) -> None:
    """SIGKILL this process when process dvc ends, from a thread that sleeps on its pidfd
    (or, where pidfds are missing or refused, looks twice a second whether the shell has
    been handed on by its dead parent). The thread needs the GIL only once dvc has died;
    the engines' long calls release it."""
    import select
    import threading
    import time

    from descent import _parent_of

    try:
        watched = os.pidfd_open(dvc)
    except ProcessLookupError:
        _end_now()
    except (OSError, AttributeError):  # Linux < 5.3, or a sandbox that refuses pidfd_open
        watched = None
    if _parent_of(shell) != dvc:  # dvc died before we opened it, its pid perhaps reused
        _end_now()

    def wait() -> None:
        if watched is not None:
            select.select([watched], [], [])
        else:
            while _parent_of(shell) == dvc:
                time.sleep(0.5)
        _end_now()

    threading.Thread(target=wait, name="end-with-dvc", daemon=True).start()


def _end_now() -> NoReturn:
    os.kill(os.getpid(), signal.SIGKILL)
    raise SystemExit(137)  # not reached: SIGKILL to oneself is delivered at once


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
    """Wrap a stage's main: its outputs appear all together or not at all, and a UserError
    (or a full disk, an unwritable folder) becomes one line on stderr and exit 1."""

    @functools.wraps(main)
    def run() -> None:
        _end_with_parent()
        try:
            claim_workspace()
            _clean_stale_temporaries()
            with all_or_none():
                main(*sys.argv[1:])
        except OSError as error:
            if error.errno not in UNWRITABLE:
                raise
            stage = os.environ.get("DVC_STAGE") or Path(sys.argv[0]).stem
            print(f"error [{stage}]: {unwritable(error)}", file=sys.stderr)
            sys.exit(1)
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


# Errors of the file system, not of the code: each gets one line naming what to fix.
UNWRITABLE = {errno.ENOSPC: "free some space and rerun",
              errno.EDQUOT: "free some space (disk quota) and rerun",
              errno.EACCES: "give yourself write access (chmod u+w) and rerun",
              errno.EPERM: "give yourself write access (chmod u+w) and rerun",
              errno.EROFS: "run from a writable copy of the project"}


def unwritable(error: OSError) -> str:
    name = error.filename2 or error.filename  # a rename names its target second
    where = f"{relative(Path(name))}: " if name else ""
    return (f"{where}{error.strerror or os.strerror(error.errno)}; {UNWRITABLE[error.errno]} "
            "(the earlier outputs are unchanged)")


# --- one writer per workspace ------------------------------------------------------------
# Two `dvc repro`/`dvc exp run` in one workspace at once interleave their stages: one run's
# dvc.lock ends up describing the other's outputs. DVC does not stop it, so each stage
# claims the workspace for the dvc process that runs it.
WORKSPACE_LOCK = ROOT / ".dvc" / "tmp" / "descent-workspace.lock"


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state, ppid, ...), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _started(pid: int) -> str | None:
    """The process's start time (with its pid, an identity that pid reuse cannot fake)."""
    stat = _proc_stat(pid)
    return stat[19] if stat else None


def run_owner() -> str | None:
    """'<pid> <start time>' of the dvc process running this stage (else of this process);
    None where /proc does not exist (then no claim is made)."""
    pid = os.getpid()
    if _proc_stat(pid) is None:
        return None
    while pid > 1:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2]
        except OSError:
            break
        if any(Path(arg.decode(errors="replace")).name == "dvc" for arg in argv):
            return f"{pid} {_started(pid)}"
        stat = _proc_stat(pid)
        if stat is None:
            break
        pid = int(stat[1])
    return f"{os.getpid()} {_started(os.getpid())}"


def claim_workspace() -> None:
    """Refuse to run beside another live dvc run (or stage) in this workspace."""
    owner = run_owner()
    if owner is None:
        return
    WORKSPACE_LOCK.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        mine = WORKSPACE_LOCK.with_name(f"{WORKSPACE_LOCK.name}.{os.getpid()}")
        mine.write_text(owner)
        try:
            os.link(mine, WORKSPACE_LOCK)  # created with its content, or not at all
            return
        except FileExistsError:
            held = WORKSPACE_LOCK.read_text() if WORKSPACE_LOCK.exists() else ""
        finally:
            mine.unlink(missing_ok=True)
        if held == owner:
            return
        pid, _, started = held.partition(" ")
        if pid.isdigit() and started and _started(int(pid)) == started:
            raise UserError(f"another dvc run (pid {pid}) is running in this workspace; "
                            "wait for it to end, or queue this one (`dvc exp run --queue`, "
                            "then `dvc queue start`): queued runs get their own copy")
        WORKSPACE_LOCK.unlink(missing_ok=True)  # its run has ended
    raise UserError(f"could not claim {relative(WORKSPACE_LOCK)}; remove it and rerun")


# --- writing outputs -----------------------------------------------------------------------
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()


# (temporary, output) pairs written inside `all_or_none`, renamed when it ends
_pending: list[tuple[Path, Path]] | None = None


@contextlib.contextmanager
def all_or_none():
    """The outputs written inside appear together when it ends without error, else none
    does: a stage never leaves one new output beside an old one (a mixed set)."""
    global _pending
    _pending = []
    try:
        yield
        for _, path in _pending:  # a folder we cannot write fails here, before any rename
            if not os.access(path.parent, os.W_OK) or \
                    (path.exists() and not os.access(path, os.W_OK)):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        for tmp, path in _pending:
            os.replace(tmp, path)
    finally:
        for tmp, _ in _pending:
            tmp.unlink(missing_ok=True)
        _pending = None


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call write(tmp) on a temporary file, then rename it to path (inside `all_or_none`:
    when it ends).

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
        if _pending is not None:
            _pending.append((tmp, path))
            return
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: Path, data: Any) -> None:
    """Strict JSON (no NaN/Infinity tokens), sorted keys, stable bytes."""
    text = json.dumps(data, indent=2, sort_keys=True, allow_nan=False)
    write_text(path, text + "\n")


def write_csv(path: Path, frame: Any, blank: tuple[str, ...] = (), **to_csv_options: Any
              ) -> None:
    """Write a pandas DataFrame as CSV, refusing NaN/inf so plot data stays valid; in the
    columns `blank` names, NaN is an empty field (a value that does not exist there)."""
    import numpy as np

    numeric = frame.drop(columns=list(blank)).select_dtypes("number").to_numpy(dtype=float)
    if blank and np.isinf(frame[list(blank)].to_numpy(dtype=float)).any():
        raise ValueError(f"refusing to write infinite values to {path}")
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


def read_arrays(path: Path, writer: str) -> dict[str, Any]:
    """Every array of a .npz file a stage wrote, read now (np.load is lazy: a damaged member
    would fail later, far from the file's name)."""
    import zipfile
    import zlib

    import numpy as np

    try:
        with np.load(path) as archive:
            return {name: archive[name] for name in archive.files}
    except (zipfile.BadZipFile, zlib.error, ValueError, EOFError):
        raise damaged(path, writer) from None


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
