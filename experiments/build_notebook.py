"""Makes the executed notebook ``experiments/walkthrough.ipynb`` from ``walkthrough.py``.

    python experiments/build_notebook.py              # what `make notebook` runs

``walkthrough.py`` (jupytext's percent format) is the source that is edited and reviewed; the
``.ipynb`` is made from it, never edited by hand, so that a researcher can open the worked
session with its tables and figures without running anything. Three steps:

1. :func:`from_script`: jupytext turns the script into a notebook, cell for cell;
2. :func:`execute`: nbclient runs it top to bottom in a fresh kernel of this interpreter
   (ipykernel's own ``python3`` kernelspec: nothing to install), whose working folder is a
   temporary one, so the sweeps' ``runs/`` land there and only the ``.ipynb`` in the repository;
3. :func:`strip`: what changes from one run to the next goes: progress bars (a widget and
   its ``100%|███| 16/16 [00:02, ...]`` text), the log lines on stderr (they hold wall
   times), the temporary folder's path, and the per-cell timing metadata (nbclient records none,
   ``record_timing=False``). Cell ids are their positions (nbformat draws random ones).
   Execution counts stay: one linear run numbers the cells 1, 2, 3...

A rerun on the same machine and versions rewrites the same outputs (figures included:
matplotlib writes a PNG without a date); elsewhere the numbers may differ in their last digits.
``tests/test_walkthrough.py`` checks that the committed notebook's cells are what
:func:`from_script` makes of the current ``walkthrough.py`` (run ``make notebook`` after
editing it), and that the notebook executes.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
from pathlib import Path

import jupytext
import nbformat
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "walkthrough.py"
NOTEBOOK = HERE / "walkthrough.ipynb"
KERNEL = "python3"
TIMEOUT_S = 600  # per cell; the walkthrough's longest cell trains for about 20 s

_WIDGET = "application/vnd.jupyter.widget-view+json"


def from_script(script: str | os.PathLike = SCRIPT) -> nbformat.NotebookNode:
    """The notebook jupytext makes of ``script``, without outputs."""
    nb = jupytext.read(script)
    # The script's own header says which format it is in; the notebook is a plain one.
    nb.metadata.pop("jupytext", None)
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i}"  # by position: nbformat's are random, a new diff every build
    return nb


def execute(nb: nbformat.NotebookNode, cwd: str | os.PathLike,
            timeout: int = TIMEOUT_S) -> nbformat.NotebookNode:
    """Runs ``nb`` in place in a fresh ``python3`` kernel started in ``cwd``; a cell that
    raises stops it with nbclient's ``CellExecutionError`` (the cell and its traceback)."""
    # This interpreter's own ipykernel (jupyter_client runs the 'python' of its kernelspec as
    # sys.executable), not a python3 kernel that the user's Jupyter folders define elsewhere.
    km = KernelManager(kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=[]))
    client = NotebookClient(nb, km=km, timeout=timeout, record_timing=False,
                            resources={"metadata": {"path": str(cwd)}})
    client.execute()
    return nb


def _is_progress(out) -> bool:
    if out.get("output_type") == "stream":
        return out.get("name") == "stderr"  # log lines and tqdm's text bar, with their times
    return _WIDGET in out.get("data", {})


def strip(nb: nbformat.NotebookNode, cwd: str | os.PathLike | None = None
          ) -> nbformat.NotebookNode:
    """``nb`` without what differs between runs: progress bars, stderr, widget state, and the
    temporary folder's path in any text output (shown as ``.``)."""
    nb.metadata.pop("widgets", None)
    paths = [str(Path(cwd).resolve()), str(cwd)] if cwd is not None else []
    pattern = re.compile("|".join(re.escape(p) for p in paths)) if paths else None
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.metadata.pop("execution", None)
        cell.outputs = [o for o in cell.outputs if not _is_progress(o)]
        if pattern is None:
            continue
        for o in cell.outputs:
            if "text" in o:
                o["text"] = pattern.sub(".", o["text"])
            for mime, value in o.get("data", {}).items():
                if mime.startswith("text/") and isinstance(value, str):
                    o["data"][mime] = pattern.sub(".", value)
    return nb


def build(script: str | os.PathLike = SCRIPT, out: str | os.PathLike = NOTEBOOK) -> Path:
    """:func:`from_script`, :func:`execute` in a temporary folder, :func:`strip`, written to
    ``out``."""
    nb = from_script(script)
    with tempfile.TemporaryDirectory(prefix="lossjax-notebook-") as cwd:
        strip(execute(nb, cwd), cwd)
    nbformat.validate(nb)
    out = Path(out)
    nbformat.write(nb, out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--script", default=str(SCRIPT), help="the jupytext percent-format source")
    ap.add_argument("--out", default=str(NOTEBOOK), help="the .ipynb to write")
    args = ap.parse_args(argv)
    print(build(args.script, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
