"""Stage `fetch`: download the NASA airfoil self-noise data and check its sha256.

Sources are tried in order (params `fetch.sources`); AIRFOIL_SOURCE (a local path or a
URL) replaces them, e.g. on a machine without internet. Writes `fetch.output`.
"""
from __future__ import annotations

from descent import config as configuration
from descent.download import fetch, sources
from descent.io import ROOT, cli, relative


def main() -> None:
    config = configuration.load()
    destination = ROOT / config.fetch.output
    used = fetch(sources(config.fetch.sources), config.fetch.sha256, destination)
    print(f"fetched {relative(destination)} from {used} (sha256 ok)")


if __name__ == "__main__":
    cli(main)()
