"""Writes each tutorial notebook ``notebooks/NN_name.ipynb`` from its jupytext percent source
``notebooks/NN_name.py`` (``python notebooks/_build.py``; ``--check`` only compares, and fails if
an ``.ipynb`` is missing, stale or has no ``.py``).

Edit the ``.py`` files (``# %%`` code cells, ``# %% [markdown]`` markdown cells, the notebook
metadata in the YAML header), then run this script and commit both. The output is deterministic:
no outputs, no execution counts, no jupytext metadata, cell ids ``"<NN>-<cell index>"``.
``tests/test_notebooks.py`` runs ``--check``'s comparison and executes each notebook with its
``parameters`` cell shrunk.

Every notebook: a title cell (what it teaches, time on CPU/GPU, "Open in Colab" badge), a first
code cell that installs the package only inside Colab from ``REPO``, ONE cell tagged
``parameters`` that sets every size, then sections that each end with an ``assert``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jupytext
import nbformat

#: The repository; every notebook's install cell and Colab badge must use it (the test checks).
REPO = "https://github.com/jaxmedrf/jaxmedrf"
HERE = Path(__file__).resolve().parent
#: The notebook names, from their percent sources ``NN_name.py``.
NOTEBOOKS = tuple(sorted(p.stem for p in HERE.glob("[0-9][0-9]_*.py")))


def convert(source: Path) -> str:
    """The ``.ipynb`` text of the percent file ``source`` (deterministic, ends with a newline)."""
    nb = jupytext.read(source, fmt="py:percent")
    nb.metadata.pop("jupytext", None)
    for i, cell in enumerate(nb.cells):
        cell.id = f"{source.stem[:2]}-{i:02d}"
    nbformat.validate(nb)
    return jupytext.writes(nb, fmt="ipynb").rstrip("\n") + "\n"


def render(name: str) -> str:
    """The ``.ipynb`` text of the notebook ``name`` (its source is ``notebooks/<name>.py``)."""
    return convert(HERE / f"{name}.py")


def stale(directory: Path = HERE) -> list[str]:
    """The problems ``--check`` reports for ``directory``: notebooks differing from their source."""
    sources = sorted(directory.glob("[0-9][0-9]_*.py"))
    problems = [f"{p.name} has no {p.stem}.py source" for p in sorted(directory.glob("*.ipynb"))
                if not p.with_suffix(".py").exists()]
    for source in sources:
        target = source.with_suffix(".ipynb")
        if not target.exists():
            problems.append(f"{target.name} is missing")
        elif target.read_text(encoding="utf-8") != convert(source):
            problems.append(f"{target.name} differs from {source.name}")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check that every .ipynb equals its .py")
    parser.add_argument("--dir", type=Path, default=HERE, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.check:
        problems = stale(args.dir)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("run `python notebooks/_build.py`", file=sys.stderr)
        return 1 if problems else 0
    for source in sorted(args.dir.glob("[0-9][0-9]_*.py")):
        target = source.with_suffix(".ipynb")
        text = convert(source)
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
            print("wrote", target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
