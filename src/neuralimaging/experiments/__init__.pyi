from .demo import run_demo
from .fidelity import nip_fidelity
from .report import write_report
from .results import collect
from .workflow import Workflow, build_workflow

__all__ = [
    "Workflow",
    "build_workflow",
    "collect",
    "nip_fidelity",
    "run_demo",
    "write_report",
]
