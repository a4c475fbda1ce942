"""The convert layer: MAT files and V2 folders -> a complete, checksummed store, and ``verify``.

:func:`run_conversion` (:mod:`~fmdata.convert.run`, ``fmdata convert``) plans the work in units of whole shards
(:mod:`~fmdata.convert.plan`), runs them (:mod:`~fmdata.convert.units`) in local processes or
on a Dask cluster (:mod:`~fmdata.convert.cluster`), resumably (:mod:`~fmdata.convert.ledger`);
:func:`verify` recomputes every checksum and compares every element with the sources.
"""
from fmdata.convert.cluster import ClusterRunner, convert_on_cluster
from fmdata.convert.driver import ConvertReport, convert
from fmdata.convert.run import run_conversion
from fmdata.convert.verify import Problem, VerifyReport, verify

__all__ = ["ClusterRunner", "convert_on_cluster", "run_conversion", "ConvertReport", "convert", "Problem",
           "VerifyReport", "verify"]
