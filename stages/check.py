"""Stage `check`: params.yaml parsed and validated as a whole, before any other stage runs.

Every stage depends on this stage's output, and DVC removes a stage's outputs before it runs
the stage's command. A refusal here (a bad value, an unknown or misspelt key, an emptied
file) stops `dvc repro` and `dvc exp run` before DVC reaches a stage that holds results. The
output's bytes do not depend on the params, so a valid change reruns only the stages whose
own params changed.
"""
from __future__ import annotations

from pathlib import Path

from descent import config as configuration
from descent.io import cli, write_text


def main(checked: str) -> None:
    configuration.check_custom_data(configuration.load())
    write_text(Path(checked), "params.yaml is valid\n")
    print("params.yaml is valid")


if __name__ == "__main__":
    cli(main)()
