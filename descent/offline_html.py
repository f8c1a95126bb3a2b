"""Build .dvc/plots/offline.html: a `dvc plots` HTML template that works without internet.

DVC's default HTML loads vega, vega-lite and vega-embed from a CDN, so the page is blank
offline. This helper (for `make plots-offline`, not a DVC stage) takes the three libraries'
browser builds from their npm packages and inlines them in a template with DVC's
`{plot_divs}` marker. The template is committed and named in .dvc/config
(`plots.html_template`), so every `dvc plots show/diff` page works offline; rebuild it to
move to newer library versions:

    python -m descent.offline_html            # needs npm and the npm registry
"""
from __future__ import annotations

import subprocess
import tarfile
import tempfile
from pathlib import Path

from descent.io import ROOT, UserError, cli, write_text

PACKAGES = {"vega@5": "vega.min.js", "vega-lite@5": "vega-lite.min.js",
            "vega-embed@6": "vega-embed.min.js"}
OUTPUT = ROOT / ".dvc/plots/offline.html"
DVC_MARKERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")


def template(scripts: list[str], versions: str = "") -> str:
    """The page; DVC fills {plot_divs} by plain string replacement."""
    for script in scripts:
        if "</script" in script or any(marker in script for marker in DVC_MARKERS):
            raise UserError("a vega build contains '</script' or a DVC marker; "
                            "it cannot be inlined")
    inlined = "\n".join(f"<script>\n{script}\n</script>" for script in scripts)
    notice = (f"<!-- Inlined: {versions} (BSD-3-Clause, University of Washington Interactive "
              "Data Lab). Built by python -m descent.offline_html. -->\n") if versions else ""
    return ('<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n<title>DVC plots</title>\n'
            f"{notice}{inlined}\n</head>\n<body>\n{{plot_divs}}\n</body>\n</html>\n")


def browser_builds(folder: Path) -> tuple[list[str], str]:
    """The libraries' browser builds, and their names with versions."""
    try:
        subprocess.run(["npm", "pack", "--silent", *PACKAGES], cwd=folder, check=True,
                       capture_output=True, text=True)
    except FileNotFoundError:
        raise UserError("npm not found; install Node.js/npm to build the offline template") \
            from None
    except subprocess.CalledProcessError as error:
        raise UserError(f"npm pack failed ({error.stderr.strip().splitlines()[-1:]}); "
                        "check access to the npm registry") from None
    scripts, versions = [], []
    for package, build in PACKAGES.items():
        name = package.rsplit("@", 1)[0]
        archive = next(folder.glob(f"{name}-[0-9]*.tgz"))
        versions.append(f"{name} {archive.name.removeprefix(name + '-').removesuffix('.tgz')}")
        with tarfile.open(archive) as bundle:
            scripts.append(bundle.extractfile(f"package/build/{build}").read().decode())
    return scripts, ", ".join(versions)


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        write_text(OUTPUT, template(*browser_builds(Path(scratch))))
    print(f"wrote {OUTPUT.relative_to(ROOT)} (the template .dvc/config names for dvc plots)")


if __name__ == "__main__":
    cli(main)()
