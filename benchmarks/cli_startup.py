"""Start-up time of the command line: how long ``neuralimaging ...`` takes before it does any work.

The CLI imports only the module of the command it runs (``neuralimaging.cli.COMMANDS``), so ``--help`` and
``--version`` start without torch, and a command does not load the others' libraries. This times each
command line in fresh processes (median of ``--repeats``), with ``--all-modules`` also timing the old way:
every command module imported before parsing (``neuralimaging.cli.build_parser()`` without argv).

Run by hand (never in the test suite)::

    .venv/bin/python benchmarks/cli_startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

LINES = (["--help"], ["--version"], ["models"], ["jpeg", "--help"], ["train", "nip", "--help"], ["prnu", "--help"])

_ALL_MODULES = (
    "import sys\n"
    "from neuralimaging import cli\n"
    "full = cli.build_parser\n"
    "cli.build_parser = lambda argv=None: full(None)\n"  # every command module, as the CLI did before
    "sys.exit(cli.main(sys.argv[1:]))\n"
)


def _time(command: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(command)}: exit code {result.returncode}: {result.stderr.strip()[-300:]}")
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--all-modules", action="store_true", help="also time parsing with every module imported")
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"{'command line':<32}{'s (median)':>12}" + (f"{'all modules':>14}" if args.all_modules else ""))
    for line in LINES:
        ours = _time([sys.executable, "-m", "neuralimaging", *line], args.repeats)
        row = f"{'neuralimaging ' + ' '.join(line):<32}{ours:>12.2f}"
        if args.all_modules:
            old = _time([sys.executable, "-c", _ALL_MODULES, *line], args.repeats)
            row += f"{old:>14.2f}"
        print(row, flush=True)
    print(f"python {sys.version.split()[0]}, load average before {load[0]:.2f}, after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
