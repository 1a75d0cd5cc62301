"""The service's background jobs: queries, preparation, training, loading and mapping run
with progress and cancel, on this process's threads or on Celery workers.

:meth:`BackgroundJobs.job_body` says what a job runs for its JSON payload, the same on a
server thread and on a worker (:mod:`dashboard.backend.celery_jobs`). Inside a request only
the owner's jobs and the server's own are found (:func:`~dashboard.backend.owner.current_owner`):
another user's job id reads as unknown.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from dashboard.backend.errors import DatasetNotFound, InvalidSelection, JobNotFound
from dashboard.backend.jobs import clean_up
from dashboard.backend.owner import current_owner
from dashboard.backend.preparation import STEP_LISTS, prepare_pair
from dashboard.backend.refs import DatasetRef, Pair
from dashboard.backend.training import discard_partial_checkpoint, train_in_process
from dashboard.backend.uploads import Incoming, accept_upload, is_incoming, upload_validators

if TYPE_CHECKING:
    from dashboard.backend.celery_jobs import CeleryJobs
    from dashboard.backend.jobs import JobContext, JobInfo, JobRunner
    from dashboard.backend.mapping import QueryMapResult
    from dashboard.backend.service import AnalysisService

#: Queries that :meth:`BackgroundJobs.submit` can run as jobs.
JOB_QUERIES = (
    "latent",
    "umap",
    "clusters",
    "cell_types",
    "denoised_rna",
    "denoised_rna_manifest",
    "denoised_rna_state",
    "denoised_protein",
    "foreground_probability",
    "imputed_proteins",
    "de_one_vs_rest",
    "de_groups",
    "metrics",
    "integration_scores",
    "gene_protein_concordance",
    "cell_cv",
    "feature_check",
    "precompute",
)

#: The kinds of job whose result is a pair (kept in the job's record as a dict).
PAIR_RESULTS = {"train", "load_model"}


@dataclass(frozen=True)
class JobBody:
    """What a job runs (``fn(ctx)``), what its record keeps (the result's cache key,
    ``result_key()`` read after ``fn``, and a small JSON-able result) and what goes when it
    ends without one."""

    fn: Callable[[JobContext], Any]
    result_key: Callable[[], str | None] | None = None
    result_json: Callable[[Any], Any] | None = None
    #: removes what the job leaves when it ends without a result (never started, failed,
    #: cancelled): the temporary file of an upload, the staging folder of a training
    cleanup: Callable[[], None] | None = None


class BackgroundJobs:
    """Submits the service's work as jobs and finds them again (owner checks included).

    Parameters
    ----------
    service
        The service whose queries, training and loading the jobs run.
    runner
        Runs jobs on this process's threads and child processes, and keeps their records.
    remote
        Celery workers for the long jobs (``None``: all run here).
    """

    def __init__(
        self, service: AnalysisService, runner: JobRunner, remote: CeleryJobs | None
    ) -> None:
        self.service = service
        self.runner = runner
        self.remote = remote

    # ================================================================ job bodies
    def job_body(self, kind: str, payload: dict[str, Any]) -> JobBody:
        """What job ``kind`` runs for ``payload`` (JSON), the same on a server thread and
        on a Celery worker: ``prepare`` ({pair, steps}), ``query`` ({query, pair, params}),
        ``train`` ({dataset, kwargs}) or ``upload`` ({target, tmp, name, shown, folder})."""
        if kind == "prepare":
            pair, steps = Pair.from_dict(payload["pair"]), str(payload.get("steps"))
            if steps not in STEP_LISTS:
                msg = f"unknown step list {steps!r}"
                raise InvalidSelection(msg)

            def prepare(ctx: JobContext) -> dict[str, float]:
                return prepare_pair(
                    self.service,
                    pair,
                    steps=steps,
                    progress=ctx.progress,
                    should_stop=ctx.cancelled,
                )

            return JobBody(prepare, result_json=lambda seconds: seconds)
        if kind == "query":
            return self._query_body(
                str(payload["query"]), Pair.from_dict(payload["pair"]), payload["params"]
            )
        if kind == "train":
            dataset, kwargs = DatasetRef.from_dict(payload["dataset"]), payload["kwargs"]
            out_dir = kwargs.get("out_dir")

            def train(ctx: JobContext) -> dict[str, Any]:
                return train_in_process(ctx, self.service.settings, dataset, kwargs)

            def discard() -> None:
                if out_dir is not None:
                    discard_partial_checkpoint(out_dir)

            return JobBody(train, result_json=lambda result: result, cleanup=discard)
        if kind == "upload":
            return self._upload_body(str(payload["target"]), Incoming.from_dict(payload))
        msg = f"unknown job kind {kind!r}"
        raise InvalidSelection(msg)

    def _upload_body(self, target: str, arrived: Incoming) -> JobBody:
        """Check an arrived upload for ``target`` and give it its name (or delete it)."""
        validators = upload_validators(self.service.settings)
        if target not in validators:
            msg = f"unknown upload target {target!r}"
            raise InvalidSelection(msg)
        if not is_incoming(arrived, self.service.settings.data_dir):
            msg = f"{arrived.shown}: the upload is gone (the server restarted?); upload it again"
            raise DatasetNotFound(msg)

        def check(ctx: JobContext) -> dict[str, Any]:
            ctx.progress(0.05, f"reading {arrived.shown} in a separate process")
            validate = validators[target]
            path, summary = accept_upload(
                arrived, lambda tmp, shown: validate(tmp, shown, should_stop=ctx.cancelled)
            )
            return {"path": str(path), "summary": asdict(summary)}

        def discard() -> None:
            arrived.tmp.unlink(missing_ok=True)

        return JobBody(check, result_json=lambda result: result, cleanup=discard)

    def _query_body(self, query: str, pair: Pair, params: dict[str, Any]) -> JobBody:
        _check_query(query)
        method = getattr(self.service, query)
        accepted = inspect.signature(method).parameters

        def run(ctx: JobContext) -> Any:
            ctx.check()
            kwargs = dict(params)
            if "progress" in accepted:
                kwargs["progress"] = ctx.progress
            if "should_stop" in accepted:
                kwargs["should_stop"] = ctx.cancelled
            result = method(pair, **kwargs)
            ctx.check()
            return result

        return JobBody(run, result_key=self.service.results.last_key)

    # ================================================================ submitting
    def _dispatch(self, kind: str, name: str, payload: dict[str, Any], params: dict) -> str:
        """Run job ``kind`` (recorded as ``name``) on a Celery worker when configured,
        else on this process's threads; returns the job id."""
        body = self.job_body(kind, payload)  # a payload a worker would refuse fails here
        if self.remote is not None:
            job = self.remote.submit(name, {"kind": kind, **payload}, params=params)
            if body.cleanup is not None and self.runner.status(job).status.finished:
                clean_up(job, body.cleanup)  # not queued (Redis cannot be reached)
            return job
        return self.runner.submit(
            name,
            body.fn,
            params=params,
            result_key=body.result_key,
            result_json=body.result_json,
            cleanup=body.cleanup,
        )

    def submit(self, query: str, pair: Pair, **params: Any) -> str:
        """Run query ``query`` (one of :data:`JOB_QUERIES`) for ``pair`` as a background job
        (on a Celery worker when ``redis_url`` is set). Returns the job id; the job's record
        gets the result's cache key when it finishes."""
        _check_query(query)
        payload = {"query": query, "pair": pair.to_dict(), "params": _json_params(params)}
        described = {"pair": pair.to_dict(), **_described(params)}
        return self._dispatch("query", query, payload, described)

    def submit_local(
        self,
        kind: str,
        fn: Callable[[JobContext], Any],
        *,
        params: dict[str, Any] | None = None,
        result_json: Callable[[Any], Any] | None = None,
    ) -> str:
        """Run ``fn(ctx)`` as job ``kind`` on this process's threads (what needs this
        process's memory: a page's closure); returns the job id."""
        return self.runner.submit(kind, fn, params=params, result_json=result_json)

    def submit_upload(self, target: str, arrived: Incoming) -> str:
        """Check an upload that arrived (:func:`~dashboard.backend.uploads.receive_upload`)
        as a job: read in a capped child process, then stored under its own name. The
        job's result is ``{"path", "summary"}``; a refused file is deleted and its job
        fails with one line naming the file."""
        payload = {"target": target, **arrived.to_dict()}
        params = {"target": target, "file": arrived.shown}
        return self._dispatch("upload", "upload", payload, params)

    def refuse(self, kind: str, error: str, **params: Any) -> str:
        """Record a job of ``kind`` that could not start, failed with ``error`` (one
        line), so its page reads the outcome as it reads every job's; returns its id."""
        return self.runner.refuse(kind, error, params=_described(params))

    def submit_prepare(self, pair: Pair, *, steps: str = "essential") -> str:
        """Prepare ``pair`` (:mod:`dashboard.backend.preparation`) as a background job;
        ``steps``: ``essential`` (what every page needs) or ``warm`` (what later pages use)."""
        name = "prepare" if steps == "essential" else "warm"
        payload = {"pair": pair.to_dict(), "steps": steps}
        return self._dispatch("prepare", name, payload, {"pair": pair.to_dict()})

    def submit_train(self, dataset: DatasetRef, *, process: bool = False, **kwargs: Any) -> str:
        """Training (:meth:`AnalysisService.train`) as a background job (cancel stops
        training at the next step).

        On a Celery worker when ``redis_url`` is set. Else, with ``process=True``, training
        runs in a child process (spawn) whose pid is in the job's record, so it can be
        killed like any process; the dataset must then have been opened from a file (the
        child or worker reads it again) and ``kwargs`` must be picklable (JSON for a
        worker). If the child dies, what it was writing under ``out_dir`` is removed.
        """
        params = {"dataset": dataset.to_dict(), **_described(kwargs)}
        if (self.remote is not None or process) and dataset.path is None:
            msg = "training in a separate process needs a dataset opened from a file"
            raise InvalidSelection(msg)
        if self.remote is not None:
            payload = {"dataset": dataset.to_dict(), "kwargs": _json_params(kwargs)}
            return self._dispatch("train", "train", payload, params)
        if process:
            out_dir = kwargs.get("out_dir")
            return self.runner.submit_process(
                "train",
                train_in_process,
                (self.service.settings, dataset, kwargs),
                params=params,
                cleanup=None if out_dir is None else lambda: discard_partial_checkpoint(out_dir),
            )

        def run(ctx: JobContext) -> Pair:
            return self.service.train(
                dataset, progress=ctx.progress, should_stop=ctx.cancelled, **kwargs
            )

        return self.submit_local("train", run, params=params, result_json=Pair.to_dict)

    def submit_load_model(self, dataset: DatasetRef, path: str | os.PathLike[str]) -> str:
        """Loading a checkpoint (:meth:`AnalysisService.load_model`) as a background job."""

        def run(ctx: JobContext) -> Pair:
            ctx.progress(0.1, f"loading {path}")
            return self.service.load_model(dataset, path)

        params = {"dataset": dataset.to_dict(), "path": str(path)}
        return self.submit_local("load_model", run, params=params, result_json=Pair.to_dict)

    def submit_map_query(self, pair: Pair, query: DatasetRef, **kwargs: Any) -> str:
        """Mapping a query (:meth:`AnalysisService.map_query`) as a background job (cancel
        stops training at the next step)."""

        def run(ctx: JobContext) -> QueryMapResult:
            ctx.check()
            return self.service.map_query(
                pair, query, progress=ctx.progress, should_stop=ctx.cancelled, **kwargs
            )

        params = {"pair": pair.to_dict(), "query": query.to_dict(), **_described(kwargs)}
        return self.submit_local(
            "map_query", run, params=params, result_json=lambda result: result.to_dict()
        )

    # ================================================================== records
    def job(self, job_id: str) -> JobInfo:
        """A job's record (status, progress, message, error, result key).

        Inside a request only the owner's jobs and the server's own are found: another
        user's job id reads as unknown (:class:`JobNotFound`)."""
        info = self.runner.status(job_id)
        if not info.visible_to(current_owner()):
            msg = f"no job {job_id}"
            raise JobNotFound(msg)
        return info

    def discard_partial_checkpoint(self, job_id: str) -> None:
        """Remove what a training job that did not finish left in its output folder (a
        worker killed mid-save leaves a hidden staging folder; never a model)."""
        out_dir = self.job(job_id).params.get("out_dir")  # the owner's jobs only
        if isinstance(out_dir, str) and out_dir:
            discard_partial_checkpoint(out_dir)

    def jobs_of(self, owner: str | None) -> list[JobInfo]:
        """The job records ``owner`` may see (``None``: all), newest first."""
        return [info for info in self.runner.registry.list() if info.visible_to(owner)]

    def cancel(self, job_id: str) -> JobInfo:
        """Request cancellation of a job (the owner's only, inside a request)."""
        self.job(job_id)
        return self.runner.cancel(job_id)

    def wait(self, job_id: str, timeout: float | None = None) -> JobInfo:
        """Block until a job finishes; returns its record (the owner's jobs only, as
        :meth:`job`)."""
        self.job(job_id)
        return self.runner.wait(job_id, timeout)

    def job_result(self, job_id: str, timeout: float | None = None) -> Any:
        """A finished job's result (from this process, else from the cache by its key)."""
        self.job(job_id)
        try:
            return self.runner.result(job_id, timeout)
        except JobNotFound:
            info = self.runner.status(job_id)
            if info.result is not None and info.kind in PAIR_RESULTS:
                return Pair.from_dict(info.result)
            if info.result_key is not None:
                value = self.service.cache.get(info.result_key)
                if value is not None:
                    return value
            raise


def _check_query(query: str) -> None:
    """Refuse a query name that is not one of :data:`JOB_QUERIES`."""
    if query not in JOB_QUERIES:
        msg = f"unknown job query {query!r}; choose one of {JOB_QUERIES}"
        raise InvalidSelection(msg)


def _json_params(params: dict[str, Any]) -> dict[str, Any]:
    """Job parameters as JSON (arrays as lists, paths as strings) for a worker."""
    out: dict[str, Any] = {}
    for k, v in params.items():
        if isinstance(v, np.ndarray):
            v = v.tolist()
        elif isinstance(v, os.PathLike):
            v = os.fspath(v)
        out[k] = v
    return out


def _described(params: dict[str, Any]) -> dict[str, Any]:
    """JSON-able description of job parameters (arrays summarised)."""
    return {k: _describe(v) for k, v in params.items()}


def _describe(value: Any) -> Any:
    """JSON-able description of a job parameter (arrays summarised)."""
    if isinstance(value, np.ndarray):
        return f"array{value.shape}"
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)[:200]
