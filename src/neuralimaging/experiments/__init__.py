"""Wiring and running: NIP pre-training, joint NIP+FAN optimization, sweeps, results, figures and reports.

The headline names are importable from the package (``from neuralimaging.experiments import run_demo``; the trainers from their modules, e.g. ``from neuralimaging.experiments.train_nip import train_nip``);
their modules are imported on first use (``lazy_loader``; the list is ``__init__.pyi``), so a command pays
only for the libraries it uses.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach_stub(__name__, __file__)
