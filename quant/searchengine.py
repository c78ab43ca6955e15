"""Where a search's candidates run: in the search's own process, in local worker processes
(``--workers N``) or as Ray tasks (``--ray-address ADDR|auto``). Each engine takes the shared
inputs once (data, float network, settings) and runs the candidate evaluation
per bit configuration (the ``evaluate_fn`` the search hands in, :func:`flipq.dse.evaluate_candidate`),
yielding results as they finish.

>>> with open_engine(shared, workers=2) as engine:            # doctest: +SKIP
...     for key, result in engine.run({"k1": (4, 4, 4, 4)}):
...         print(key, result["val_accuracy"])

Every engine gives the same results: a candidate's training is seeded and single-threaded, so
it does not depend on where it runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from collections.abc import Callable

from flipq.quant.candidate import Hardware, Training


class RayUnavailableError(RuntimeError):
    """--ray-address given but Ray is not installed."""


# How long joining a Ray cluster may take: Ray itself retries an unreachable address for minutes
RAY_CONNECT_TIMEOUT_S = 30.0


class RayUnreachableError(RuntimeError):
    """--ray-address names a cluster that does not answer; the message names the address."""


def check_ray_address(address: str, timeout_s: float = 5.0) -> None:
    """Refuse an explicit ``HOST:PORT`` (or ``ray://HOST:PORT``) nothing listens on, in seconds,
    before a search trains anything; ``auto`` is checked when Ray joins (:class:`RayEngine`)."""
    import socket

    if address == "auto":
        return
    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--ray-address {address!r}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise RayUnreachableError(f"--ray-address {address}: no Ray cluster answers there ({e.strerror or e}); "
                                  "start it (ray start --head) or give its address") from None


def _ray_init(ray, address: str, timeout_s: float = RAY_CONNECT_TIMEOUT_S) -> None:
    """``ray.init`` that gives up after ``timeout_s``, naming the address (a daemon thread: a
    connection Ray keeps retrying cannot hold the process open)."""
    import threading

    outcome: list = []

    def join():
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
            outcome.append(None)
        except BaseException as e:  # handed to the caller below
            outcome.append(e)

    worker = threading.Thread(target=join, name="flipq-ray-init", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if not outcome:
        raise RayUnreachableError(f"--ray-address {address}: no Ray cluster answered within {timeout_s:g} s; "
                                  "check the address (ray status) or run without --ray-address")
    if outcome[0] is not None:
        e = outcome[0]
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RayUnreachableError(f"--ray-address {address}: cannot join the Ray cluster ({first})") from e


@dataclass(frozen=True)
class Shared:
    """What every candidate of one search shares."""

    data: object  # flipq.quant.data.Dataset: training rows and the validation split as its test split
    float_state: dict
    training: Training
    hardware: Hardware
    board: object  # flipq.boards.Board
    # (data, float_state, training, hardware, board, bits) -> the candidate's record: the search
    # (flipq.dse.evaluate_candidate) hands it in, so the engines stay below the hardware stage; a
    # module-level function, which worker processes and Ray tasks import by name
    evaluate_fn: Callable

    def evaluate(self, bits: tuple) -> dict:
        return self.evaluate_fn(self.data, self.float_state, self.training, self.hardware, self.board, bits)


class InlineEngine:
    def __init__(self, shared: Shared):
        self.shared = shared

    def run(self, jobs: dict) -> Iterator[tuple[str, dict]]:
        for key, bits in jobs.items():
            yield key, self.shared.evaluate(bits)

    def close(self) -> None:
        pass


_WORKER_SHARED: Shared | None = None  # one per worker process, set once by its initializer


def _init_worker(shared: Shared) -> None:
    global _WORKER_SHARED
    _WORKER_SHARED = shared


def _evaluate_in_worker(bits: tuple) -> dict:
    return _WORKER_SHARED.evaluate(bits)


class ProcessEngine:
    def __init__(self, shared: Shared, workers: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: the parent has torch's thread pools running (a forked copy can deadlock)
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_init_worker, initargs=(shared,))

    def run(self, jobs: dict) -> Iterator[tuple[str, dict]]:
        from concurrent.futures import as_completed

        futures = {self.pool.submit(_evaluate_in_worker, bits): key for key, bits in jobs.items()}
        for fut in as_completed(futures):
            yield futures[fut], fut.result()

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)


def _ray_evaluate(shared: Shared, bits: tuple) -> dict:
    return shared.evaluate(bits)


class RayEngine:
    def __init__(self, shared: Shared, address: str):
        try:
            import ray
        except ImportError:
            raise RayUnavailableError("--ray-address needs Ray: pip install 'flipq[cluster]' (ray==2.60.0)") from None
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:  # a caller (or a test) that started Ray itself keeps its instance
            check_ray_address(address)
            _ray_init(ray, address)
        self.shared_ref = ray.put(shared)
        self.task = ray.remote(num_cpus=1)(_ray_evaluate)

    def run(self, jobs: dict) -> Iterator[tuple[str, dict]]:
        pending = {self.task.remote(self.shared_ref, bits): key for key, bits in jobs.items()}
        while pending:
            done, _ = self.ray.wait(list(pending), num_returns=1)
            for ref in done:
                yield pending.pop(ref), self.ray.get(ref)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


@contextlib.contextmanager
def open_engine(shared: Shared, workers: int = 1, ray_address: str | None = None):
    """The engine for these settings, closed when the block ends."""
    if ray_address:
        engine = RayEngine(shared, ray_address)
    elif workers > 1:
        engine = ProcessEngine(shared, workers)
    else:
        engine = InlineEngine(shared)
    try:
        yield engine
    finally:
        engine.close()
