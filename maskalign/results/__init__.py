"""From job records to the paper's tables and figures.

``reference`` loads the paper's numbers (``results/paper_reference/``), ``collect`` turns the
``record.json`` files under an output root into a pandas frame, ``tables`` shapes Tables 1-7 plus
robustness and segmentation with the paper's numbers beside ours, ``render`` writes CSV, Markdown
and LaTeX, ``figures`` draws the mask-ratio curve and ``attention`` the [CLS] attention maps
(Figure 3). The thin scripts are ``results/make_tables.py`` and ``results/attention_maps.py``.
"""

from pathlib import Path

#: Where the typed-in paper numbers live in a source checkout (the package is installed editable).
DEFAULT_REFERENCE_DIR = Path(__file__).resolve().parents[2] / "results" / "paper_reference"
