"""``zfnet bench``: the library's hot paths measured against this machine's limits and peer tools.

:mod:`~zfnet.bench.suite` runs the sections and prints the report (the command is
:mod:`zfnet.cli.bench`); each section lives in its own module (:mod:`~zfnet.bench.gemm`,
:mod:`~zfnet.bench.train`, :mod:`~zfnet.bench.data`, :mod:`~zfnet.bench.deconv`,
:mod:`~zfnet.bench.occlusion`, :mod:`~zfnet.bench.repro`) and times with :mod:`~zfnet.bench.timing`.
Results and targets: docs/benchmarks.md.
"""
