"""Device selection and the CPU allocator setting."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest
import torch

from neuralimaging.device import keep_freed_memory, resolve_device
from neuralimaging.errors import InputError

_FAULTS = """
import resource, sys, torch
if sys.argv[1] == "keep":
    from neuralimaging.device import keep_freed_memory
    assert keep_freed_memory()
torch.set_num_threads(1)
faults = []
for _ in range(40):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(16 * 2**20)  # 64 MiB, as a joint step's activations
    del x
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sum(faults[30:]))  # the steady state: glibc settles on reusing a freed block within 1-9 rounds (measured)
"""


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(InputError, match="device must be one of"):
        resolve_device("tpu")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's")
def test_keep_freed_memory_stops_the_page_faults_of_large_tensors() -> None:
    """With glibc's defaults every 64 MiB tensor is a fresh mapping (16,384 page faults); kept memory is reused."""
    env = {k: v for k, v in os.environ.items() if k != "NEURALIMAGING_SYSTEM_MALLOC"}
    runs = {mode: int(subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True,
                                     env=env).stdout) for mode in ("system", "keep")}
    assert runs["system"] > 10 * 16_000  # each of the last ten allocations faults its 16,384 pages in
    assert runs["keep"] < 1_000
    assert keep_freed_memory() is keep_freed_memory()  # idempotent
