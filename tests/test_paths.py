"""One owner for every path: dvc.yaml declares exactly the outputs descent.paths names, and
the paths its commands pass are descent.paths' (change one without the other and DVC would
track files the stages no longer write, or miss the ones they do)."""
from __future__ import annotations

from pathlib import Path

from descent import paths
from descent.config import VARIANTS
from tests.test_deps import STAGES, spec

ROOT = Path(__file__).resolve().parent.parent


def outs_of(stage: dict) -> list[str]:
    return [next(iter(out)) if isinstance(out, dict) else out for out in stage.get("outs", [])]


def declared_outputs() -> dict[str, list[str]]:
    found = {}
    for name, stage in spec().items():
        if "foreach" in stage:
            for key in stage["foreach"]:
                found[f"{name}@{key}"] = [out.replace("${key}", key)
                                          for out in outs_of(stage["do"])]
        else:
            found[name] = outs_of(stage)
    return found


def test_dvc_yaml_declares_exactly_the_outputs_descent_paths_names():
    def ordered(outputs):
        return {stage: sorted(outs) for stage, outs in outputs.items()}

    assert ordered(declared_outputs()) == ordered(paths.stage_outputs(VARIANTS))


def test_the_paths_in_commands_are_descent_paths():
    assert STAGES["check"][0].split()[-1] == paths.CHECKED
    assert STAGES["fetch"][0].split()[-1] == paths.RAW_AIRFOIL
    assert STAGES["prepare"][0].split()[-1] == paths.RAW_AIRFOIL


def test_every_data_dependency_is_a_stage_output_or_a_file_the_user_keeps():
    """A dep that no stage writes and that is not the user's (published figures, own data)
    would be a stale name."""
    written = {out for outs in paths.stage_outputs(VARIANTS).values() for out in outs}
    folders = {str(Path(out).parent) for out in written}
    for stage, (_, deps) in STAGES.items():
        for dep in deps:
            if dep.endswith(".py"):
                continue
            assert dep in written | folders | {paths.PUBLISHED, paths.CUSTOM}, (stage, dep)
