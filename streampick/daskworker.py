"""What streampick installs on Dask workers (imported only with ``executor: dask``, so Dask stays optional).

:class:`WarmWorker` loads the daemon's model on every worker when the daemon starts and on every worker that
joins later (an adaptive SLURM pool), so that a micrograph's first task does not pay for importing torch and
loading the weights (seconds on a CPU, more on a cold GPU).
"""
from __future__ import annotations

from distributed.diagnostics.plugin import WorkerPlugin

from .executor import ModelRef, cached_model, tune_allocator


class WarmWorker(WorkerPlugin):
    """Load ``ref`` into the worker's model cache (:func:`~streampick.executor.cached_model`) at setup."""

    name = "streampick-warm"
    idempotent = False  # a new model version replaces the plugin, and setup loads that version

    def __init__(self, ref: ModelRef, device: str) -> None:
        self.ref, self.device = ref, device

    def setup(self, worker) -> None:
        tune_allocator()
        cached_model(self.ref, self.device)
