"""Campaigns that outgrow one machine: the same tasks on a Dask cluster.

The payload (networks, weight images, evaluation data) is scattered to every worker once; each
worker process keeps its fault-free runs between tasks, as local worker processes do.
"""

from __future__ import annotations

from collections.abc import Iterator

from hwflow.errors import HwflowError


class SchedulerError(HwflowError):
    """The Dask scheduler cannot be reached or a task failed there."""


def _run(payload, task):
    from hwflow.campaign.runner import _limit_threads, run_task

    _limit_threads()
    return run_task(payload, task)


def run_on_dask(payload, tasks: list, scheduler: str) -> Iterator[list]:
    """Run tasks on the cluster at ``scheduler`` (an address), or on a local cluster (``"local"``)."""
    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    try:
        if scheduler == "local":
            cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
            client = Client(cluster)
        else:
            client = Client(scheduler, timeout="20s")
    except (OSError, TimeoutError) as err:
        msg = f"cannot reach the Dask scheduler at {scheduler!r} ({err}); start one with 'dask scheduler'"
        raise SchedulerError(msg) from None
    try:
        shared = client.scatter(payload, broadcast=True)
        futures = [client.submit(_run, shared, task, pure=False) for task in tasks]
        for future in as_completed(futures):
            yield future.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
