"""Where work runs: local worker processes, or Dask (threads, a LocalCluster, an existing cluster).

Used by the converter, ``verify`` and the derivations; imports none of them (tasks name the
modules their workers should preload). ``exit_with`` is also how fmmodel's DataLoader workers
end with their main process.
"""
from fmdata.compute.dask_cluster import DaskOptions, Runner, dask_runner
from fmdata.compute.processes import UnitRunner, exit_with, init_worker, resolve_workers, run_parallel

__all__ = ["DaskOptions", "Runner", "dask_runner", "UnitRunner", "exit_with", "init_worker", "resolve_workers",
           "run_parallel"]
