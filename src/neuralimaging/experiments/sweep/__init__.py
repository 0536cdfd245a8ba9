"""Grids of training runs: expansion into stably named run directories, and their execution.

A sweep file (YAML) names the grid of the paper's evidence (cameras x NIPs x modes x ``lambda_nip`` x
repetitions, Korus & Memon, section 5 and supplement Table 1) and the training task each run calls. Runs
execute locally one at a time, in ``workers`` processes, or as Ray tasks on a cluster (each task asks for the
sweep's ``resources``, e.g. one GPU). Worker processes and Ray start a run as soon as the NIP run it needs is
done, with no barrier between stages. Execution is resumable and fault-isolated:

- a run is **done** when its ``summary.json`` exists and reads as a JSON object: rerunning the sweep skips
  it (a damaged summary is moved aside to ``summary.json.damaged`` and the run resumes to write it again);
- a run with a checkpoint but no summary was **interrupted** (killed, or stopped early by a step budget):
  it is pending, and rerunning resumes it (``resume=True``);
- a run that raises is **failed**: the traceback goes to ``error.txt`` in its folder, the others go on; a
  worker process that dies (killed for memory, say) fails only its own run; on Ray, a run whose worker process
  or node dies is run again (``retries``), from its last checkpoint, on another node if need be;
- a run holding a ``.running`` lock of a live executor is **running** (another executor owns it); a lock
  whose owner is gone (same host and boot, dead process id; or no heartbeat for a minute) is taken over, and
  so is one left by an earlier attempt of the same sweep execution (a retry after a lost worker or node);
- a run whose config names a ``nip_run`` that is not done is **blocked**: it does not start, and a later
  execution runs it once its NIP run has finished.

Where runs persist (:mod:`~neuralimaging.experiments.storage`): by default in the runs folder, which on a
Ray cluster must be a disk every node mounts at the same path (a node that does not see it fails the run with
an error saying so); or in a storage URI (``s3://...``, ``file:///shared/...``, any pyarrow filesystem): runs
execute on their node's own disk and sync to storage, and the runs folder is the driver's copy. While runs
train, ``progress.json`` and TensorBoard logs in each run folder show their progress
(:mod:`~neuralimaging.experiments.live`). A cluster's nodes need the package's dependencies installed; the
package itself can travel with the job (:func:`package_runtime_env`). How to run a sweep on a cluster: the
README's cluster section and ``docs/cluster.md``.

Sweep file schema (every key but ``grid``/``stages`` optional)::

    name: demo
    resources: {num_cpus: 1, num_gpus: 0}    # per run: Ray task resources; num_cpus also sets torch threads
    stages:                                  # run in order; or put task/config/grid/repetitions at the top
      - name: pretrain                       # run names get this prefix: pretrain/<camera>/<nip>/000
        task: nip                            # nip | manipulation (default) | an allowed plugin
        config: {preset: quick, data: "{sweep_dir}/data"}
        grid: {camera: [default], nip: [inet]}
      - name: joint
        config: {preset: quick, data: "{sweep_dir}/data", nip_run: "{runs}/pretrain/{camera}/{nip}/000"}
        grid:
          camera: [default]
          nip: [inet]
          mode: [F, F+N]                     # F: config train="fan"; F+N: train="fan,nip"
          lambda_nip: [0.1, 0.01]            # used by F+N runs only (F is the paper's "-" row)
        repetitions: 2                       # seed = config seed (default 0) + repetition

A sweep file is data, not code: ``task`` names one of the toolkit's own tasks (:data:`TASKS`). A task of
another module (``"package.module:function"``) runs only when whoever runs the sweep allows it by name
(``plugins=`` here, ``sweep run --plugin MODULE:FUNCTION`` on the command line), since it imports and calls
whatever the file names.

Grid axes are applied to the run's config: ``mode`` sets ``train``, ``repetition`` sets ``seed``, ``camera``
(and ``nip`` in a manipulation task, whose NIP comes from ``nip_run``) only names runs and fills templates,
any other axis ``a.b`` sets ``config[a][b]``. An axis value may also be a mapping
``{name: LABEL, <config key>: value, ...}``: the label names the run, the other keys are set in the config.
Strings in ``config`` may use ``{runs}`` (the runs folder), ``{sweep_dir}`` (the sweep file's folder) and
``{<axis>}`` placeholders. Run names follow the axes in grid order, e.g. ``joint/default/inet/FN/ln-0.1000/003``.


The package's modules: :mod:`~neuralimaging.experiments.sweep.spec` (tasks, modes, run folder files, the
expansion of a sweep file), :mod:`~neuralimaging.experiments.sweep.state` (the state of runs),
:mod:`~neuralimaging.experiments.sweep.execute` (one run: locks, storage, failure isolation) and
:mod:`~neuralimaging.experiments.sweep.executors` (a whole sweep: here, in processes or on Ray).
"""

from neuralimaging.experiments.sweep.execute import RunOutcome, RunProgress, execute_run
from neuralimaging.experiments.sweep.executors import (
    mirror,
    package_runtime_env,
    run_sweep,
)
from neuralimaging.experiments.sweep.spec import (
    ERROR_FILE,
    HEARTBEAT_S,
    LABEL_AXES,
    LOCK_FILE,
    MODES,
    PLAN_FILE,
    POLL_S,
    RUN_FILE,
    STALE_AFTER_S,
    TASKS,
    RunSpec,
    Sweep,
    expand,
    load_sweep,
)
from neuralimaging.experiments.sweep.state import (
    RunState,
    find_runs,
    run_state,
    sweep_status,
)

__all__ = [
    "ERROR_FILE",
    "HEARTBEAT_S",
    "LABEL_AXES",
    "LOCK_FILE",
    "MODES",
    "PLAN_FILE",
    "POLL_S",
    "RUN_FILE",
    "STALE_AFTER_S",
    "TASKS",
    "RunOutcome",
    "RunProgress",
    "RunSpec",
    "RunState",
    "Sweep",
    "execute_run",
    "expand",
    "find_runs",
    "load_sweep",
    "mirror",
    "package_runtime_env",
    "run_state",
    "run_sweep",
    "sweep_status",
]
