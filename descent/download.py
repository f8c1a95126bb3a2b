"""Download the NASA airfoil self-noise data and check its sha256 (the `fetch` stage).

Sources are tried in order (params `fetch.sources`). The environment variable
AIRFOIL_SOURCE (a local path or a URL) replaces them, e.g. on a machine without
internet; the checksum is enforced either way.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from descent.io import ROOT, SCRATCH, UserError

OVERRIDE_VARIABLE = "AIRFOIL_SOURCE"


def is_url(source: str) -> bool:
    return source.split("://", 1)[0].lower() in {"http", "https", "ftp", "sftp", "doi"} \
        and "://" in source


def local_path(source: str) -> Path:
    """A local source, relative paths taken from the project root (where DVC runs stages)."""
    path = Path(source.removeprefix("file://")).expanduser()
    return path if path.is_absolute() else ROOT / path


def download(url: str, folder: Path) -> Path:
    """Download url into folder with pooch; raise OSError-like errors on failure."""
    import pooch

    pooch.get_logger().setLevel(logging.WARNING)
    # known_hash=None: we compare the hash ourselves so the error can show both values.
    return Path(pooch.retrieve(url, known_hash=None, path=folder, progressbar=False))


def sha256_of(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(sources: list[str], expected_sha256: str, destination: Path) -> str:
    """Copy the first reachable source to destination after checking its sha256.

    Returns the source used. Nothing is written to destination unless the checksum matches.
    """
    failures = []
    destination.parent.mkdir(parents=True, exist_ok=True)
    SCRATCH.mkdir(parents=True, exist_ok=True)  # not in data/raw, where git would see it
    with tempfile.TemporaryDirectory(dir=SCRATCH, prefix=f"{os.getpid()}-fetch-") as scratch:
        for source in sources:
            if is_url(source):
                try:
                    candidate = download(source, Path(scratch))
                except Exception as error:  # requests/pooch raise many types; report, try next
                    failures.append(f"{source} ({type(error).__name__})")
                    continue
            else:
                candidate = local_path(source)
                if not candidate.is_file():
                    failures.append(f"{source} (no such file)" if not candidate.exists()
                                    else f"{source} (not a file)")
                    continue
            actual = sha256_of(candidate)
            if actual != expected_sha256:
                raise UserError(
                    f"checksum mismatch for {source}: expected sha256 {expected_sha256}, "
                    f"got {actual}; the file was not kept")
            staged = Path(scratch) / (destination.name + ".part")
            shutil.copyfile(candidate, staged)
            os.replace(staged, destination)
            return source
    raise UserError(
        "could not fetch the airfoil data from " + "; ".join(failures)
        + f". Check the network, or set {OVERRIDE_VARIABLE} to a local copy or another URL")


def sources(configured: tuple[str, ...]) -> list[str]:
    """AIRFOIL_SOURCE when set, else the configured sources."""
    override = os.environ.get(OVERRIDE_VARIABLE, "").strip()
    if override:
        return [override]
    if not configured:
        raise UserError(f"fetch.sources is empty; list at least one URL or set "
                        f"{OVERRIDE_VARIABLE}")
    return list(configured)
