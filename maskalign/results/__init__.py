"""From job records to the paper's tables and figures.

``reference`` loads the paper's numbers (``maskalign/results/paper_reference/``, package data),
``collect`` turns the ``record.json`` files under an output root into a pandas frame, ``tables``
shapes Tables 1-7 plus robustness and segmentation with the paper's numbers beside ours,
``render`` writes CSV, Markdown and LaTeX, ``figures`` draws the mask-ratio curve and
``attention`` the [CLS] attention maps (Figure 3). ``render_all`` runs them all. The thin scripts
are ``results/make_tables.py`` and ``results/attention_maps.py``.
"""

from pathlib import Path

#: The typed-in paper numbers, shipped with the package.
DEFAULT_REFERENCE_DIR = Path(__file__).resolve().parent / "paper_reference"
