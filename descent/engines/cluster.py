"""Blocks of runs on a dask cluster (params.yaml `train.cluster`), for sweeps and seed counts
that outgrow one machine.

Runs are independent, so the compiled engine sends each block of them to a worker as one
task: the engine's own entry point on the block (the data sent once to every worker, the
sufficient statistics computed once here), the same kernel on the same numbers, so each run
is bit for bit what it is in-process. No scheduling of our own: dask's scheduler places the
tasks. Imported only when a cluster is named (dask's import costs ~0.5 s).

`local` starts a LocalCluster on this machine (one single-threaded worker process per core:
for trying it, and for the tests). A real cluster is a scheduler's address,
tcp://host:8786: start one with `dask scheduler`, and workers with `dask worker
tcp://host:8786` on machines where this project's code is importable (its folder on
PYTHONPATH, the same Python packages as requirements.txt); dask-jobqueue or dask-kubernetes
start them on Slurm or Kubernetes.
"""
from __future__ import annotations

import functools

from descent.io import UserError
from descent.parallel import cores

CONNECT_SECONDS = 10  # how long a named scheduler may take to answer


@functools.cache
def client(address: str):
    """One dask Client per address for this process (a LocalCluster for `local`)."""
    from dask.distributed import Client, LocalCluster

    if address == "local":
        return Client(LocalCluster(n_workers=cores(), threads_per_worker=1,
                                   dashboard_address=None))
    try:
        return Client(address, timeout=CONNECT_SECONDS)
    except (OSError, TimeoutError) as error:
        raise UserError(f"train.cluster: no dask scheduler answers at {address} ({error}); "
                        f"start one (`dask scheduler`, then `dask worker {address}` on each "
                        "worker machine) or set train.cluster: none") from None


def map_blocks(address: str, function, shared: tuple, blocks: list[tuple], **options):
    """[function(*shared, *block, **options) for block in blocks], each call a task on the
    cluster's workers; `shared` (the data) is sent to every worker once."""
    connected = client(address)
    # hash=False: fresh keys each call (two recipes on one data set would share hashed keys,
    # and the first call's release would drop the second's data)
    data = connected.scatter(list(shared), broadcast=True, hash=False)
    tasks = [connected.submit(function, *data, *block, pure=False, **options)
             for block in blocks]
    return connected.gather(tasks)
