"""Workers: the code a job runs, in class form (:class:`Worker`) or as a decorated function
(:class:`WorkerFunction`, made by ``@app.worker``)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional

from typing_extensions import Unpack

from .errors import ConfigurationError
from .job import Job
from .options import JobOptions, check_max_attempts, check_priority, check_tags, not_utf8
from .unique import Unique, check_unique

if TYPE_CHECKING:
    from ._native import JobSpec
    from .app import Kathikon


class Worker:
    """Subclass and implement :meth:`perform`, then ``app.register(MyWorker)``.

    Class attributes set the defaults for jobs of this worker::

        class Report(kathikon.Worker):
            queue = "default"
            max_attempts = 5
            priority = 0
            timeout = None          # seconds; sync jobs: in worker processes only
            cancel = None           # "kill": a cancel ends a running sync job's process
            unique = None           # kathikon.Unique(...): insert once per key

            def perform(self, job: kathikon.Job) -> None: ...

            def backoff(self, job: kathikon.Job) -> float | None:
                return None         # seconds before the retry; None uses the default

    ``perform`` may be ``async def``. It completes the job by returning; raising retries it
    (or discards it once its attempts are used up); returning or raising
    :class:`~kathikon.Cancel`, :class:`~kathikon.Snooze` or :class:`~kathikon.Discard` does
    what they say.
    """

    queue: ClassVar[str] = "default"
    max_attempts: ClassVar[Optional[int]] = None
    priority: ClassVar[int] = 0
    timeout: ClassVar[Optional[float]] = None
    #: ``"kill"``: cancelling a running job of this (sync) worker ends the worker process
    #: that runs it; ``None``: the job runs on and its outcome is refused.
    cancel: ClassVar[Optional[str]] = None
    tags: ClassVar[Sequence[str]] = ()
    name: ClassVar[Optional[str]] = None
    #: A cron expression: the app also inserts a job with no args on each of its slots (an
    #: entry named after the worker; see ``Kathikon.cron``).
    cron: ClassVar[Optional[str]] = None
    #: The IANA time zone ``cron`` is read in.
    cron_timezone: ClassVar[str] = "UTC"
    unique: ClassVar[Optional[Unique]] = None
    #: Keep what ``perform`` returns as the job's result (``job.result``, ``app.result``).
    store_result: ClassVar[bool] = True

    def perform(self, job: Job) -> Any:
        raise NotImplementedError(f"{type(self).__qualname__}.perform is not implemented")

    def backoff(self, job: Job) -> Optional[float]:
        """Seconds to wait before retrying ``job`` after it failed; ``None`` for the default."""
        return None


@dataclass(frozen=True)
class Registration:
    """A registered worker, however it was declared."""

    name: str
    queue: str
    max_attempts: Optional[int]
    priority: int
    timeout: Optional[float]
    tags: tuple[str, ...]
    perform: Callable[[Job], Any]
    is_async: bool
    backoff: Optional[Callable[[Job], Optional[float]]]
    unique: Optional[Unique] = None
    #: Largest result kept, in bytes of JSON; None: the worker keeps none.
    result_limit: Optional[int] = None
    #: ``cancel="kill"``: a cancel of a running job ends the worker process that runs it.
    kill_on_cancel: bool = False


def qualified_name(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def make_registration(
    *,
    name: str,
    queue: str,
    max_attempts: Optional[int],
    priority: int,
    timeout: Optional[float],
    tags: Sequence[str],
    perform: Callable[[Job], Any],
    backoff: Optional[Callable[[Job], Optional[float]]],
    known_queues: Sequence[str],
    unique: Optional[Unique] = None,
    result_limit: Optional[int] = None,
    cancel: Optional[str] = None,
) -> Registration:
    """Check a worker's settings at definition time, so mistakes surface at import."""
    where = f"worker {name!r}"
    if not isinstance(name, str) or not name or not_utf8(name):
        raise ConfigurationError(f"{where}: a worker name must be non-empty UTF-8 text")
    if queue not in known_queues:
        raise ConfigurationError(
            f"{where} uses queue {queue!r}, which this app does not have; "
            f"configured queues: {', '.join(known_queues)}"
        )
    try:
        if max_attempts is not None:
            check_max_attempts(max_attempts)
        check_priority(priority)
        tags = check_tags(tags)
    except ValueError as exc:
        raise ConfigurationError(f"{where}: {exc}") from None
    # Look through functools.wraps layers: a decorated `async def` is still async.
    is_async = inspect.iscoroutinefunction(perform) or inspect.iscoroutinefunction(
        inspect.unwrap(perform)
    )
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ConfigurationError(f"{where}: timeout={timeout!r} must be seconds above 0")
    kill_on_cancel = check_cancel(cancel, is_async, where)
    if backoff is not None and not callable(backoff):
        raise ConfigurationError(f"{where}: backoff={backoff!r} must be callable(job) -> seconds")
    return Registration(
        name=name,
        queue=queue,
        max_attempts=max_attempts,
        priority=priority,
        timeout=float(timeout) if timeout is not None else None,
        tags=tuple(tags),
        perform=perform,
        is_async=is_async,
        backoff=backoff,
        unique=check_unique(unique, where),
        result_limit=result_limit,
        kill_on_cancel=kill_on_cancel,
    )


def check_cancel(cancel: object, is_async: bool, where: str) -> bool:
    """Whether a worker's ``cancel=`` asks for its running jobs' processes to end on a cancel:
    ``"kill"`` (sync workers only) or ``None``."""
    if cancel is None:
        return False
    if not (isinstance(cancel, str) and cancel == "kill"):
        raise ConfigurationError(
            f'{where}: cancel={cancel!r} is not a way to cancel; pass cancel="kill" to end the '
            "worker process running a sync job when the job is cancelled, or None (the "
            "default: the job runs on and its outcome is refused)"
        )
    if is_async:
        raise ConfigurationError(
            f'{where}: cancel="kill" is for sync workers, whose threads cannot be interrupted; '
            "this one is async, and ending its worker process would end every async job on "
            'that process\'s event loop: drop cancel="kill"'
        )
    return True


class WorkerFunction:
    """What ``@app.worker`` returns: the function, still callable as before, plus
    :meth:`insert` and :meth:`new` with the decorator's settings as defaults."""

    def __init__(self, app: Kathikon, fn: Callable[[Job], Any], registration: Registration):
        self._app = app
        self._fn = fn
        self.registration = registration
        self.__name__ = getattr(fn, "__name__", registration.name)
        self.__qualname__ = getattr(fn, "__qualname__", registration.name)
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__wrapped__ = fn

    @property
    def name(self) -> str:
        """The name jobs store to find this worker again."""
        return self.registration.name

    @property
    def queue(self) -> str:
        return self.registration.queue

    def __call__(self, job: Job) -> Any:
        return self._fn(job)

    def new(
        self, args: Optional[Mapping[str, Any]] = None, **options: Unpack[JobOptions]
    ) -> JobSpec:
        """An unsaved job for :meth:`Kathikon.insert_all`; options as for ``insert``."""
        return self._app._new(self.registration, args, options)

    def insert(
        self,
        args: Optional[Mapping[str, Any]] = None,
        *,
        conn: Any = None,
        **options: Unpack[JobOptions],
    ) -> Job:
        """Insert a job for this worker; see :meth:`Kathikon.insert` for ``conn`` and the
        options (``queue``, ``priority``, ``schedule_in``, ``schedule_at``, ``max_attempts``,
        ``tags``, ``meta``, ``unique``, ``replace``)."""
        return self._app.insert(self, args, conn=conn, **options)

    def __repr__(self) -> str:
        return f"<WorkerFunction {self.name} queue={self.queue!r}>"
