"""Stage `fetch`: download the NASA airfoil self-noise data and check its sha256.

Sources are tried in order (params `fetch.sources`); AIRFOIL_SOURCE (a local path or a
URL) replaces them, e.g. on a machine without internet.

    python -m stages.fetch <destination>     (dvc.yaml names it)
"""
from __future__ import annotations

from descent import config as configuration
from descent.download import fetch, sources
from descent.io import ROOT, UserError, cli, relative


def main(output: str = "") -> None:
    if not output:
        raise UserError("usage: python -m stages.fetch <destination>")
    config = configuration.load()
    destination = ROOT / output
    used = fetch(sources(config.fetch.sources), config.fetch.sha256, destination)
    print(f"fetched {relative(destination)} from {used} (sha256 ok)")


if __name__ == "__main__":
    cli(main)()
