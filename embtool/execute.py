"""Where per-shard work runs: threads of this process (the default), or a Dask distributed cluster.

A sharded table's operations split their work into **tasks**: a plain module-level function and
a small picklable argument (shard paths, row ranges, queries, row ids), returning a small result
(top-k keys, row blocks asked for, statistics partials, the name of a file a task wrote).  An
``Executor`` runs a list of them and returns the results in order:

* ``InProcess`` (default): a thread pool of this process, one thread per core at most.  The hot
  loops release the GIL (numpy, BLAS, Numba's ``nogil`` kernels), so threads run in parallel, and
  nothing is pickled or copied.  Dask is never imported.
* ``Dask``: a ``distributed.Client`` connected to ``--scheduler ADDRESS`` (or
  ``EMBTOOL_SCHEDULER``).  Workers open the shards **by path**, so the table must be on a file
  system every worker sees at the same path (the coordinator sends absolute paths).  Tasks that
  only read are retried on another worker when theirs dies; tasks that write (a new shard file)
  are not: their command fails, and nothing of the table has changed (the coordinator commits
  only after every task has finished).

BLAS and bits.  ``similar`` scores rows with BLAS matrix-vector products whose last bits depend on
how BLAS splits a call between its threads; Dask workers start with one BLAS thread
(``OPENBLAS_NUM_THREADS=1``).  A task therefore runs with the coordinator's BLAS thread count
(``threadpoolctl``, part of the ``embtool[dask]`` extra), so a worker computes exactly what this
process would.
"""
from __future__ import annotations

import os
from typing import Callable, Sequence

from .errors import EmbtoolError

ENV = "EMBTOOL_SCHEDULER"
HINT = "pip install 'embtool[dask]'"

_default: str | None = None


def set_default(address: str | None) -> None:
    """Make ``address`` the scheduler of tables opened from now on in this process (``None``:
    back to ``EMBTOOL_SCHEDULER`` or threads).  The CLI's ``--scheduler`` option calls this."""
    global _default
    _default = address or None


def scheduler_address(address: str | None = None) -> str | None:
    """The scheduler to use: ``address``, else the one set by ``set_default``, else
    ``EMBTOOL_SCHEDULER``; None (or an empty value) means threads of this process."""
    return (address or _default or os.environ.get(ENV, "").strip()) or None


def executor(address: str | None = None) -> "Executor":
    """The executor for ``address`` (see ``scheduler_address``)."""
    address = scheduler_address(address)
    return InProcess() if address is None else Dask.connect(address)


class Executor:
    """Runs tasks ``fn(arg)`` and returns their results in order (see the module docstring)."""

    #: whether tasks run in other processes (then results travel, and paths must be shared)
    remote = False

    def map(self, fn: Callable, args: Sequence, *, retry: bool = True,
            done: Callable[[int], None] | None = None) -> list:
        """``[fn(a) for a in args]``, the tasks run at once; ``done(i)`` is called here as task
        ``i`` finishes (progress); ``retry``: a task whose worker died may run again (tasks that
        only read, or write only files of their own)."""
        raise NotImplementedError

    def workers(self) -> int:
        """How many tasks run at once."""
        raise NotImplementedError


class InProcess(Executor):
    """Threads of this process (one per core, at most one per task)."""

    def __init__(self, threads: int | None = None):
        self.threads = threads or os.cpu_count() or 1

    def map(self, fn, args, *, retry=True, done=None):
        args = list(args)
        if len(args) <= 1 or self.threads == 1:
            results = []
            for i, a in enumerate(args):
                results.append(fn(a))
                if done is not None:
                    done(i)
            return results
        # imported here, not at the top: every command with --scheduler imports this module to
        # set the default, and few of them run tasks (the import costs 7 ms)
        from concurrent.futures import ThreadPoolExecutor, as_completed

        with ThreadPoolExecutor(min(len(args), self.threads), thread_name_prefix="embtool") as pool:
            futures = {pool.submit(fn, a): i for i, a in enumerate(args)}
            for future in as_completed(futures):
                future.result()  # the first failure stops the command
                if done is not None:
                    done(futures[future])
            return [f.result() for f in futures]

    def workers(self) -> int:
        return self.threads


class Dask(Executor):
    """A Dask distributed cluster: tasks are submitted by the client and gathered back."""

    remote = True
    _clients: dict = {}

    def __init__(self, client, address: str):
        self.client = client
        self.address = address
        self.blas_threads = _blas_threads()

    @classmethod
    def connect(cls, address: str) -> "Dask":
        try:
            import distributed
        except ImportError:
            raise EmbtoolError(f"--scheduler {address} needs Dask: {HINT}") from None
        client = cls._clients.get(address)
        if client is None or client.status not in ("running", "connecting"):
            try:
                client = distributed.Client(address, timeout="10s", set_as_default=False)
            except (OSError, TimeoutError) as exc:
                raise EmbtoolError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
            cls._clients[address] = client
        return cls(client, address)

    def map(self, fn, args, *, retry=True, done=None):
        import distributed

        args = list(args)
        if not args:
            return []
        # pure=False: every call is a new task (the same arguments may read a changed table).
        futures = self.client.map(_with_blas, [fn] * len(args), args, [self.blas_threads] * len(args),
                                  pure=False, retries=2 if retry else 0)
        try:
            if done is not None:  # in order: as_completed would need a default client
                for i, future in enumerate(futures):
                    future.result()
                    done(i)
            return self.client.gather(futures)
        except distributed.KilledWorker as exc:
            raise EmbtoolError(f"a Dask worker died while running a task ({exc}); nothing was "
                               "written") from None
        except (OSError, TimeoutError) as exc:
            raise EmbtoolError(f"lost the Dask scheduler at {self.address}: {exc}") from None
        finally:
            self.client.cancel(futures)

    def workers(self) -> int:
        info = self.client.scheduler_info(n_workers=-1) if _takes_n_workers(self.client) else \
            self.client.scheduler_info()
        return max(1, sum(w.get("nthreads", 1) for w in info.get("workers", {}).values()))


def _takes_n_workers(client) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


def _blas_threads() -> int | None:
    """This process's BLAS thread count (None when threadpoolctl is not installed)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    counts = [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]
    return max(counts) if counts else None


def _with_blas(fn, arg, blas_threads):
    """Run a task on a worker with the coordinator's BLAS thread count (module docstring)."""
    if blas_threads is None:
        return fn(arg)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return fn(arg)
    with threadpool_limits(limits=blas_threads, user_api="blas"):
        return fn(arg)
