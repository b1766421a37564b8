"""Where a sweep's cells run: in this process (`inline`, the default), or one scheduler job per cell
through submitit: `slurm` (a Slurm job array) or `local` (submitit's LocalExecutor: real
subprocesses on this machine, for trying the same path without a cluster).

A cell job runs the cell exactly as the inline sweep does (`Runner.run` on the same planned run),
so it is an ordinary resumable run in the shared store: the store's run lock keeps two jobs off one
run, its WAL journal lets the jobs commit side by side, and a job that dies (kill -9, a node lost,
the time limit) leaves stages that a re-run of the sweep resumes. The parent plans, checks and
settles every cell before it submits, exactly as the inline sweep, then either waits for the array
and collects the cells from the store (the table is the inline sweep's), or returns (`--no-wait`)
and `bench report --sweep NAME` collects them later. submitit and Slurm are imported only here,
only when asked for.
"""
from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from harness.errors import BenchError
from harness.progress import log, progress, reporting

if TYPE_CHECKING:
    from harness.run.sweep import AfterRun, PlannedCell
    from harness.run.sweep_plan import CellResult, SweepPlan
    from harness.run.runner import PlannedRun, Runner
    from harness.store import Store
    from harness.task.spec import TaskSpec

LAUNCHERS = ("inline", "local", "slurm")
# A Slurm job gets 5 minutes unless told otherwise (submitit's default): far too little for a cell.
SLURM_DEFAULT_MINUTES = 240
LOCAL_DEFAULT_MINUTES = 7 * 24 * 60  # the local executor kills a task at its limit: effectively none
REQUEUES = 3  # a cell that reaches its time limit is requeued this often, resuming from its stored state
SCHEDULER_OPTIONS = ("gpus_per_cell", "cpus_per_cell", "mem_gb", "time_limit", "slurm_folder", "no_wait")


def add_launcher_options(sweep: argparse.ArgumentParser) -> None:
    group = sweep.add_argument_group("launcher (one scheduler job per cell, through submitit)")
    group.add_argument("--launcher", choices=LAUNCHERS, default="inline",
                       help="inline (default: every cell in this process), slurm (a Slurm job array, one job per "
                            "cell) or local (submitit's local executor: one subprocess per cell on this machine)")
    group.add_argument("--partition", help="slurm: the partition the cells' jobs are queued on")
    group.add_argument("--gpus-per-cell", type=int, help="GPUs each cell's job gets (slurm: --gpus-per-node)")
    group.add_argument("--cpus-per-cell", type=int, help="CPU cores each cell's job gets (slurm: --cpus-per-task)")
    group.add_argument("--mem-gb", type=int, help="memory of each cell's job in GB (slurm: --mem)")
    group.add_argument("--time-limit", type=int, metavar="MINUTES",
                       help=f"each cell job's time limit in minutes (slurm default {SLURM_DEFAULT_MINUTES}); a cell "
                            f"that reaches it is requeued (up to {REQUEUES} times) and resumes where it stopped")
    group.add_argument("--slurm-option", action="append", metavar="KEY=VALUE",
                       help="slurm: any other sbatch option for every cell's job, e.g. --slurm-option account=proj "
                            "--slurm-option qos=high (written as #SBATCH --KEY=VALUE); repeatable")
    group.add_argument("--slurm-folder", help="the jobs' scripts and logs (default: RESULTS/slurm/SWEEP_NAME)")
    group.add_argument("--no-wait", action="store_true", default=None,
                       help="submit the cells and return; `bench report --sweep NAME` collects them later")


def check_launcher(args: argparse.Namespace) -> None:
    """Every launcher problem, before the store is opened: a bad combination writes nothing."""
    launcher = getattr(args, "launcher", None) or "inline"
    for flag in ("partition", "slurm_option"):
        if getattr(args, flag, None) is not None and launcher != "slurm":
            name = "--" + flag.replace("_", "-")
            raise BenchError(f"{name} is an option of Slurm jobs: add --launcher slurm, or drop {name}")
    slurm_options(getattr(args, "slurm_option", None))  # a malformed item fails here, before anything
    if launcher == "inline":
        given = [name for name in SCHEDULER_OPTIONS if getattr(args, name, None) not in (None, False)]
        if given:
            flag = "--" + given[0].replace("_", "-")
            raise BenchError(f"{flag} applies to cells run as scheduler jobs: add --launcher slurm (or --launcher "
                             f"local to try it on this machine), or drop {flag}")
        return
    for name in ("gpus_per_cell", "cpus_per_cell", "mem_gb", "time_limit"):
        value, least = getattr(args, name, None), 0 if name == "gpus_per_cell" else 1
        if value is not None and value < least:
            raise BenchError(f"--{name.replace('_', '-')} {value}: give {least} or more")
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise BenchError(f"--launcher {launcher} needs submitit: pip install 'bench[slurm]' "
                         "(or pip install 'submitit>=1.5')") from None
    missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
    if launcher == "slurm" and missing:  # sbatch queues the array; each job's script starts the cell with srun
        raise BenchError(f"--launcher slurm needs Slurm's {' and '.join(missing)} on PATH (run the sweep on a "
                         "cluster's login node), or use --launcher local to run the cells as subprocesses here")


def launch(args: argparse.Namespace, plan: SweepPlan, planned: Sequence[PlannedCell], runners: dict[str, Runner],
           store: Store, log: Callable[[str], None], after_run: AfterRun) -> list[CellResult] | None:
    """The cells' results, or None when they were submitted with --no-wait (they run on)."""
    # lazy: keeps numpy, sqlite3 out of `bench --help`
    from harness.run.sweep import execute

    launcher = getattr(args, "launcher", None) or "inline"
    if launcher == "inline":
        return execute(planned, runners, store, log, after_run=after_run)
    folder = Path(args.slurm_folder) if args.slurm_folder else store.root / "slurm" / plan.name
    executor = make_executor(launcher, folder.resolve(), plan.name, args, len(planned))
    data_dir = next(iter(runners.values())).data_dir  # --data-dir or BENCH_DATA_DIR, as the sweep read it
    job = CellJob(str(store.root.resolve()), str(data_dir.resolve()) if data_dir else None)
    jobs = submit(executor, job, planned, detach=launcher == "local" and bool(args.no_wait))
    where = "Slurm" if launcher == "slurm" else "local"
    log(f"sweep {plan.name}: {len(jobs)} cells submitted as {where} jobs {jobs[0].job_id}"
        f"{'..' + jobs[-1].job_id if len(jobs) > 1 else ''}; logs in {folder}")
    if args.no_wait:
        print(f"submitted {len(jobs)} cells of sweep {plan.name} ({where} jobs, logs in {folder}); collect them with: "
              f"bench report --sweep {plan.name} --results {store.root}")
        return None
    return collect(plan, planned, jobs, store, log, after_run, poll_seconds=30.0 if launcher == "slurm" else 1.0)


def submit(executor: Any, job: CellJob, planned: Sequence[PlannedCell], detach: bool) -> list[Any]:
    """The cells as one job array. sbatch refusing it (an unknown partition or account, a limit too
    long) is one error line: the sweep's manifest and run files are written, no cell has run."""
    from submitit.core.utils import FailedSubmissionError, UncompletedJobError

    refusal = io.StringIO()  # submitit prints sbatch's complaint itself, then raises it
    try:
        with detached_streams(detach), redirect_stderr(refusal):
            return executor.map_array(job, [item.spec for item in planned], [item.run for item in planned])
    except (UncompletedJobError, FailedSubmissionError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or ["no reason given"]
        raise BenchError(f"the scheduler refused the sweep's jobs: {lines[-1]}; fix the option it names "
                         "(--partition, --slurm-option, --time-limit, ...) and run the sweep again") from None


def make_executor(launcher: str, folder: Path, name: str, args: argparse.Namespace, cells: int) -> Any:
    """submitit's executor with the cells' resources: Slurm's own options, or the local executor's."""
    import submitit

    executor = submitit.AutoExecutor(folder=folder, cluster=launcher, slurm_max_num_timeout=REQUEUES)
    limit = args.time_limit or (SLURM_DEFAULT_MINUTES if launcher == "slurm" else LOCAL_DEFAULT_MINUTES)
    parameters: dict[str, Any] = {"name": f"bench-{name}", "timeout_min": limit, "nodes": 1, "tasks_per_node": 1,
                                  "cpus_per_task": args.cpus_per_cell, "mem_gb": args.mem_gb,
                                  "gpus_per_node": args.gpus_per_cell}
    if launcher == "slurm":
        parameters.update(slurm_partition=args.partition, slurm_array_parallelism=cells,
                          slurm_additional_parameters=slurm_options(args.slurm_option))
    elif args.gpus_per_cell is None:
        # the local executor hides every GPU unless told a count: each cell sees this machine's, as inline
        parameters["gpus_per_node"] = visible_gpu_count()
    executor.update_parameters(**parameters)
    return executor


def slurm_options(items: Sequence[str] | None) -> dict[str, str]:
    """--slurm-option KEY=VALUE items -> {key: value} for submitit's additional sbatch parameters."""
    options = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key or not value.strip():
            raise BenchError(f"--slurm-option {item!r}: expected KEY=VALUE, an sbatch option without its dashes "
                             "(e.g. account=proj)")
        options[key.replace("-", "_")] = value.strip()
    return options


def visible_gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@contextmanager
def detached_streams(detach: bool) -> Iterator[None]:
    """The local executor's job controllers inherit this process's stdout and stderr; with --no-wait
    they outlive it, and a reader of its output (a pipe, `| tee`) would wait for the last cell. Their
    own output goes to the log files anyway, so they start with /dev/null instead."""
    if not detach:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


@dataclass(frozen=True)
class CellJob:
    """One cell as a scheduler job: the inline sweep's `Runner.run` of the cell's planned run, against
    the shared store. Returns "" when the cell is complete, or the reason it failed (a BenchError, e.g.
    a diverged loss: a result of the sweep, as inline); anything else fails the job with its traceback
    in the job's log. Its `checkpoint` makes submitit requeue the cell at the time limit: the store and
    the saved training state are the checkpoint, so the same call resumes it."""

    root: str
    data_dir: str | None

    def __call__(self, spec: TaskSpec, run: PlannedRun) -> str:
        # lazy: keeps numpy, pandas, sqlite3 out of `bench --help`
        from harness.run.runner import Runner
        from harness.store import Store

        store = Store(Path(self.root))
        try:
            with reporting():
                Runner(spec, store, Path(self.data_dir) if self.data_dir else None, log).run(run)
        except BenchError as exc:
            print(f"cell failed: {exc}", file=sys.stderr, flush=True)
            return str(exc)
        finally:
            store.close()
        return ""

    def checkpoint(self, spec: TaskSpec, run: PlannedRun) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, spec, run)


def collect(plan: SweepPlan, planned: Sequence[PlannedCell], jobs: Sequence[Any], store: Store,
            log: Callable[[str], None], after_run: AfterRun, poll_seconds: float) -> list[CellResult]:
    """Wait for every cell's job, then read the cells from the store as `bench report --sweep` does:
    the table equals the inline sweep's. A failed job's cell says why and where its log is."""
    import dataclasses

    import submitit

    # lazy: keeps numpy, sqlite3 out of `bench --help`
    from harness.run.sweep import results_from_store

    label = {job.job_id: item.cell.label for job, item in zip(jobs, planned)}
    run_of = {job.job_id: item.run.run_id for job, item in zip(jobs, planned)}
    failures: dict[str, str] = {}
    with progress("sweep", total=len(jobs), unit="cells") as bar:
        for number, job in enumerate(submitit.helpers.as_completed(jobs, poll_frequency=poll_seconds), 1):
            error = job_failure(job)
            log(f"[cell {number}/{len(jobs)}] {label[job.job_id]}: " + (f"failed: {error}" if error else "complete"))
            if error:
                failures[run_of[job.job_id]] = error
            bar.advance(1, failed=len(failures) or None)
    results = results_from_store(store, dataclasses.replace(plan, failures=failures))
    for result in results:
        if result.rows:
            after_run(result.cell.run_id, store.run_config(result.cell.run_id) or {}, result.records)
    return results


def job_failure(job: Any) -> str:
    """'' for a complete cell; else why it failed, with the path of the job's log."""
    from submitit.core.utils import FailedJobError, UncompletedJobError

    try:
        error = job.result()
    except FailedJobError as exc:  # the job raised: the traceback's last line says what
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        error = f"job {job.job_id} raised {lines[-1] if lines else 'an error'}"
    except UncompletedJobError as exc:  # killed, out of memory, cancelled, lost node: no result written
        error = f"job {job.job_id} ended without a result ({str(exc).splitlines()[0][:200]})"
    return f"{error} (log: {job.paths.stderr})" if error else ""

