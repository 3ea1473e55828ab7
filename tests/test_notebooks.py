"""The tutorial notebooks: each ``notebooks/NN_name.ipynb`` equal to the conversion of its jupytext
percent source ``NN_name.py`` by ``notebooks/_build.py`` (a check shown to fail on an edited copy),
committed without outputs, one repository URL, only the public API, and each one executed top to
bottom (nbclient, a kernel running this interpreter, JAX on the CPU) with its ``parameters`` cell
shrunk."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shutil
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
jupytext = pytest.importorskip("jupytext")

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"

#: Tiny sizes replacing each notebook's ``parameters`` cell (same names, checked below).
TINY = {
    "01_drr_from_ct": "N = 16; DET = 24; VIEWS = 4; CT_N = 16; MEDNERF_DETECTOR = 24; I0S = (1e3, 1e5); GRID_SIZES = (8, 16)",
    "02_sparse_view_ct": ("ACCEL = False; N = 16; VIEWS = (16,); ITERS = 25; BATCH_RAYS = 512; N_SAMPLES = 16; LOG2_TABLE = 12; "
                          "SART_ITERS = 2; EVAL_EVERY = 25; PSNR_FLOOR = 12.0"),
    "03_speed": "N_POINTS = (1024,); N_LEVELS = 2; LOG2_TABLE = 12; REPEATS = 1; PROJ_SIZES = (16,); PROJ_DET = 12; PROJ_VIEWS = 2",
    "04_cohort_and_devices": ("ACCEL = False; N = 16; VIEWS = 12; CASES = 2; ITERS = 50; BATCH_RAYS = 512; N_SAMPLES = 24; LOG2_TABLE = 12; "
                              "N_DEVICES = 4; PSNR_FLOOR = 10.0"),
    "05_registration": "N = 32; DET = 32; LEVELS = (1,); ITERATIONS = 80; STARTS = 3; LANDSCAPE = 9; MTRE_MAX = 1.0",
    "06_mri_slice_interpolation": ("SHAPE = (24, 24, 16); SPACING = 4.0; K = 4; INR_ITERS = 50; INR_BATCH = 2048; "
                                   "SMORE_ITERS = 20; SMORE_FEATURES = 8; SMORE_PATCH = 16"),
}


def _build_module():
    spec = importlib.util.spec_from_file_location("notebooks_build", NB_DIR / "_build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


BUILD = _build_module()
NAMES = sorted(BUILD.NOTEBOOKS)


def _read(name: str):
    return nbformat.read(NB_DIR / f"{name}.ipynb", as_version=4)


def _assigned_names(source: str) -> set[str]:
    return {t.id for node in ast.parse(source).body if isinstance(node, ast.Assign) for t in node.targets
            if isinstance(t, ast.Name)}


def _parameters_cell(nb):
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "exactly one cell must be tagged 'parameters'"
    return cells[0]


def test_notebook_files_are_the_built_ones():
    assert sorted(p.stem for p in NB_DIR.glob("*.ipynb")) == NAMES == sorted(TINY)
    for name in NAMES:
        committed = (NB_DIR / f"{name}.ipynb").read_text(encoding="utf-8")
        assert committed == BUILD.render(name), (
            f"{name}.ipynb differs from {name}.py: run `python notebooks/_build.py`")
        assert BUILD.render(name) == BUILD.render(name), "the conversion is not deterministic"
    assert BUILD.stale() == []
    assert BUILD.main(["--check"]) == 0


def test_check_fails_on_an_edited_copy(tmp_path, capsys):
    """``--check`` catches a cell edited in the .py or in the .ipynb, and a notebook without a
    source; rebuilding the copy carries the edit into its .ipynb."""
    for path in [*NB_DIR.glob("[0-9][0-9]_*.py"), *NB_DIR.glob("*.ipynb")]:
        shutil.copy(path, tmp_path / path.name)
    assert BUILD.stale(tmp_path) == []
    name = NAMES[0]
    source, target = tmp_path / f"{name}.py", tmp_path / f"{name}.ipynb"

    # A cell of the percent source changes: the committed .ipynb is stale.
    text = source.read_text(encoding="utf-8")
    marker = '# %% tags=["parameters"]\n'
    assert text.count(marker) == 1
    source.write_text(text.replace(marker, marker + "EDITED = 1\n"), encoding="utf-8")
    assert BUILD.stale(tmp_path) == [f"{name}.ipynb differs from {name}.py"]
    assert BUILD.main(["--check", "--dir", str(tmp_path)]) == 1
    assert "differs" in capsys.readouterr().err
    assert BUILD.main(["--dir", str(tmp_path)]) == 0 and BUILD.stale(tmp_path) == []
    nb = nbformat.read(target, as_version=4)
    assert _parameters_cell(nb).source.startswith("EDITED = 1\n")
    assert [c.id for c in nb.cells] == [f"{name[:2]}-{i:02d}" for i in range(len(nb.cells))]

    # A cell of the .ipynb changes by hand: it no longer equals its source (and undoing the edit
    # makes it equal again, so the check sees the edit, not the way the file was written).
    title = nb.cells[0].source
    for edited, problems in [(title + " edited", [f"{name}.ipynb differs from {name}.py"]), (title, [])]:
        nb.cells[0].source = edited
        target.write_text(nbformat.writes(nb) + "\n", encoding="utf-8")
        assert BUILD.stale(tmp_path) == problems

    # A notebook without its percent source, and a source without its notebook.
    source.unlink()
    (tmp_path / f"{NAMES[1]}.ipynb").unlink()
    assert BUILD.stale(tmp_path) == [f"{name}.ipynb has no {name}.py source", f"{NAMES[1]}.ipynb is missing"]


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_has_no_outputs(name):
    nb = _read(name)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{name} cell {i} has outputs"
            assert cell.execution_count is None, f"{name} cell {i} has an execution count"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_structure(name):
    nb = _read(name)
    title, install = nb.cells[0], nb.cells[1]
    # The percent header carries the notebook metadata (Colab, kernel); jupytext's own is dropped.
    assert sorted(nb.metadata) == ["colab", "kernelspec", "language_info"]
    assert nb.metadata.kernelspec.name == "python3"
    assert title.cell_type == "markdown" and title.source.startswith("# ")
    colab = f"https://colab.research.google.com/github/{BUILD.REPO.removeprefix('https://github.com/')}/blob/main/notebooks/{name}.ipynb"
    assert colab in title.source and "**Time:**" in title.source and "**What it teaches:**" in title.source
    # One repository URL for every notebook, the README and the badge.
    assert re.findall(r'^REPO = "(.*)"$', install.source, re.M) == [BUILD.REPO]
    assert 'if "google.colab" in sys.modules:' in install.source and "!" not in install.source
    assert BUILD.REPO in (NB_DIR / "README.md").read_text(encoding="utf-8")
    assert f"{name}.ipynb" in (NB_DIR / "README.md").read_text(encoding="utf-8")
    # Tiny parameters set exactly the notebook's parameter names.
    assert _assigned_names(_parameters_cell(nb).source) == _assigned_names(TINY[name])
    # Only the public API: `import jaxmedrf as jm`, nothing private.
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "import jaxmedrf as jm" in code
    assert not re.search(r"^\s*(from jaxmedrf|import jaxmedrf\.)", code, re.M)
    assert not re.search(r"\bjm(\.[A-Za-z]\w*)*\._[A-Za-z]", code), "private names (jm._...) are not for notebooks"
    # Every section ends with an assert.
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown" and cell.source.startswith("## "):
            following = [c for c in nb.cells[i + 1:] if c.cell_type == "code" or c.source.startswith("## ")]
            section = []
            for c in following:
                if c.cell_type == "markdown":
                    break
                section.append(c)
            assert section and "assert " in section[-1].source, f"{name}: section {cell.source.splitlines()[0]!r} ends without an assert"


@pytest.fixture(scope="session")
def kernel_manager_factory(tmp_path_factory):
    """KernelManagers for a kernelspec that runs THIS interpreter (installed in a temp dir)."""
    from ipykernel.kernelspec import install
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    prefix = tmp_path_factory.mktemp("kernelspec")
    install(prefix=str(prefix), kernel_name="jaxmedrf-test", display_name="jaxmedrf test")
    kernel_dirs = [str(prefix / "share" / "jupyter" / "kernels")]

    def make():
        ksm = KernelSpecManager(kernel_dirs=kernel_dirs)
        spec = ksm.get_kernel_spec("jaxmedrf-test")
        assert spec.argv[0] == sys.executable
        return KernelManager(kernel_name="jaxmedrf-test", kernel_spec_manager=ksm)

    return make


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_at_tiny_size(name, tmp_path, kernel_manager_factory):
    from nbclient import NotebookClient

    nb = _read(name)
    _parameters_cell(nb).source = TINY[name]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["JAX_PLATFORMS"] = "cpu"
    env.pop("MPLBACKEND", None)  # the kernel's inline backend, as in Jupyter/Colab
    client = NotebookClient(nb, km=kernel_manager_factory(), timeout=300, allow_errors=False,
                            resources={"metadata": {"path": str(tmp_path)}})
    t0 = time.perf_counter()
    client.execute(env=env)
    print(f"{name}: {time.perf_counter() - t0:.1f} s")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, "the notebook drew no figure"
