"""The :class:`Kathikon` app: configuration, worker registry, and the calls users make."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from functools import partial
from types import TracebackType
from typing import Any, Callable, Literal, Optional, TypeVar, Union, overload
from urllib.parse import urlsplit, urlunsplit

from typing_extensions import Unpack

from . import batches as _batches
from . import drain as _drain
from . import metrics as _metrics
from . import process_info as _process_info
from . import processes as _processes
from . import progress as _progress
from . import queues as _queues
from . import results as _results
from . import telemetry, testing_mode
from . import transactional as _transactional
from ._native import Engine, JobSpec, ListFilter, job_spec
from .batches import Batch, BatchStatus, check_batch_id
from .config import Config, QueueSpec, build_config, parse_concurrency, positive_seconds
from .cron import DEFAULT_CATCH_UP_LIMIT, DEFAULT_TIMEZONE, SKIP, CronEntry, Crontab
from .engine_events import EventPump
from .errors import (
    ConfigurationError,
    InvalidJobError,
    JobNotFoundError,
    JobStateError,
    StorageError,
    StoreNotFoundError,
    UnknownQueueError,
    UnknownWorkerError,
)
from .job import Job, JobState, QuarantinedRecord, from_micros
from .limits import UNSET, GlobalLimitSpec, RateLimitSpec, Unset
from .listing import JobFilter, JobFilterExtras, JobPage, Order, States, build_filter, encode_cursor
from .options import (
    JOB_OPTION_NAMES,
    JobOptions,
    Seconds,
    check_max_attempts,
    check_option_names,
    check_priority,
    check_tags,
    encode_json,
    scheduled_at_micros,
    seconds_of,
    shown,
)
from .queue_check import QueueCheck
from .queues import QueueSettings
from .results import DEFAULT_MAX_RESULT_BYTES
from .runner import Runner
from .stop_signal import StopRequest
from .unique import NativeUnique, Unique, check_replace, native_unique
from .vocabulary import FSYNC
from .worker import Registration, Worker, WorkerFunction, make_registration, qualified_name

log = logging.getLogger("kathikon")
WorkerRef = Union[WorkerFunction, type[Worker], Worker, str]
# register() returns what it is given, class or instance, typed as given (it is a decorator).
_Registrable = TypeVar("_Registrable", bound=Union[type[Worker], Worker])
# Which queues start()/run() run: names (at their configured concurrency) or name → concurrency.
QueueSelection = Union[Iterable[str], Mapping[str, int]]
INSERT = ("kathikon", "job", "insert")
MAX_JOB_ID = 2**64 - 1
# Where the one line naming the opened store's absolute path and this process's role goes.
OPEN_LOGGER = "kathikon.store"


def _wall_micros() -> int:
    return time.time_ns() // 1000


def _store_exists(path: str, create: bool) -> bool:
    """Whether the store file is there; with ``create=False`` a missing one is refused."""
    if os.path.exists(path):
        return True
    if not create:
        raise StoreNotFoundError(
            f"no store at {os.path.abspath(path)}: the file does not exist (a relative path is "
            f"resolved from the working directory, {os.getcwd()}); pass the path of an "
            "existing store, or create=True to create a new one"
        )
    return False


def _check_url(url: object, path: Optional[str]) -> str:
    """``url=`` checked: a PostgreSQL connection string, and no ``path`` beside it."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError(
            f"url={shown(url)}: pass a PostgreSQL url such as "
            '"postgresql://app@db.internal/app", or path= for a store file'
        )
    if path is not None:
        raise ConfigurationError(
            f"path={path!r} and url= were both given: a store is either a file (path=) or a "
            "PostgreSQL database (url=); pass one"
        )
    return url


def _redacted(url: str) -> str:
    """``url`` without its password, for logs: a URL's ``user:password@`` and a ``key=value``
    string's (or a URL query's) ``password=...``."""
    url = re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)", r"\1***", url)
    parts = urlsplit(url)
    if "://" not in url or parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _log_open(path: str, existed: bool, role: str, owner_pid: int) -> None:
    log = logging.getLogger(OPEN_LOGGER)
    where = os.path.abspath(path)
    if not existed:
        log.info("created a new, empty store at %s (this process owns it)", where)
    elif role == "owner":
        log.info("opened the store at %s (this process owns it)", where)
    else:
        log.info("opened the store at %s as a client of its owner, pid %d", where, owner_pid)


class Kathikon:
    """A job queue backed by one store: a file (``path``) or a PostgreSQL database (``url``).

    Args:
        path: the store file (created if missing, owner-only permissions); ``None`` keeps
            jobs in memory, gone when the app closes.
        queues: queue name → concurrency, or → ``{"concurrency": n}``. Default
            ``{"default": 10}``.
        max_attempts: default attempts per job (20).
        poll_interval: longest an idle queue waits before looking again, seconds (1.0; a
            job wakes an idle queue at once, so a shorter wait only costs idle wake-ups).
        scheduler_interval: longest the scheduler sleeps, seconds (1.0); it normally wakes
            exactly when the next scheduled job is due.
        prune_interval: how often old finished jobs are deleted, seconds (60).
        retention_period: how long completed/cancelled/discarded jobs are kept, seconds
            (604,800 = 7 days); or per state, e.g. ``{"completed": 3600, "discarded":
            30 * 86400}`` (a state left out keeps 7 days).
        durability: ``"fsync"`` (default: every insert is on disk before it returns) or
            ``"none"`` (~5× faster single inserts; a killed process loses nothing, a power loss
            or an OS crash up to the last ~2 s).
        max_args_bytes: refuse jobs whose ``args`` encode to more UTF-8 JSON bytes than this
            (``InvalidJobError``); ``None`` (default) for no limit.
        clock: ``"system"`` (default) or ``"manual"``: time starts at now and moves only with
            :meth:`advance_clock` — for tests of scheduling and backoff without sleeping.
        connect: when another process already owns the store file, use it through that
            process's socket (default ``True``; the app's :attr:`role` is then
            ``"client"``). ``False`` raises :class:`StorageLockedError` instead.
        lease: seconds the store's owner keeps this process's claimed jobs without hearing
            from it (default 30); a native heartbeat renews it while the process lives.
            Only used when this process is a client.
        takeover: whether this process may own the store (default ``True``): open the file
            itself when no other process holds it, at open or after the owner went away.
            ``False`` only ever connects to an owner, waiting for one to serve (up to 5 s per
            call, then :class:`OwnerGoneError`). The worker processes of
            ``start(processes=N)`` always run with ``False``, so a job that crashes one
            cannot take the store down: the pool's parent, which runs no jobs, takes over.
        testing: ``"manual"`` or ``"inline"`` for an app under test (default ``None``: a
            normal app); the environment variable ``KATHIKON_TESTING`` overrides it for every
            app made in the process. Either mode keeps jobs in a fresh in-memory store (``path``
            stays :attr:`path` but is never created or opened, and no running owner is used),
            runs on a manual clock and starts no workers (:meth:`start` only logs that it did
            not; :meth:`run` raises). ``"manual"``: jobs wait to be run by
            :func:`kathikon.testing.drain_jobs`. ``"inline"``: each insert runs its jobs at
            once, once, in the caller (a job scheduled for later too) and returns them
            finished. See docs/testing.md.
        create: create the store file if it is missing (default ``True``). ``False`` raises
            :class:`StoreNotFoundError` instead, so a relative path opened from another
            working directory cannot silently start an empty store. Either way the store's
            absolute path, and whether it was created or opened, is logged at INFO on the
            ``kathikon`` logger. A testing mode neither looks for the file nor logs it.
        url: a PostgreSQL database instead of a store file, for apps on several machines
            (``"postgresql://user:password@host:5432/dbname"``, or a ``key=value`` string,
            with libpq's TLS parameters: ``sslmode``, ``sslrootcert``, ``sslcert``,
            ``sslkey``); every process that opens it is a peer node (:attr:`role`
            ``"node"``). ``path``, ``durability``, ``connect``, ``takeover`` and ``create``
            are for store files and are not used. See docs/guides/postgres.md.
        migrate: with ``url``, create or upgrade Kathikon's schema (``kathikon``) in the
            database at open (default ``False``: a database without it, or with an older one,
            raises :class:`StoreVersionError` naming ``kathikon migrate --url``).

    Raises:
        ConfigurationError: a setting is invalid.
        StorageLockedError: another app in this process holds the file (one app per store
            per process, owner or client; close it first), or another process holds it and
            does not serve it (or ``connect=False``).
        StoreNotFoundError: ``create=False`` and there is no file at ``path``.
        NotAStoreError, CorruptStoreError, StoreVersionError: the file cannot be used.
    """

    def __init__(
        self,
        path: Union[str, os.PathLike[str], None] = None,
        queues: Optional[Mapping[str, QueueSpec]] = None,
        *,
        max_attempts: int = 20,
        poll_interval: float = 1.0,
        scheduler_interval: float = 1.0,
        prune_interval: float = 60.0,
        retention_period: Union[float, Mapping[str, float]] = 604_800.0,
        durability: str = "fsync",
        clock: str = "system",
        max_args_bytes: Optional[int] = None,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
        connect: bool = True,
        lease: float = 30.0,
        takeover: bool = True,
        testing: Optional[str] = None,
        create: bool = True,
        url: Optional[str] = None,
        migrate: bool = False,
    ) -> None:
        if clock not in ("system", "manual"):
            raise ConfigurationError(
                f'clock={shown(clock)}: use "system" (the default) or "manual"'
            )
        self.config: Config = build_config(
            queues,
            max_attempts,
            poll_interval,
            scheduler_interval,
            prune_interval,
            retention_period,
            durability,
            max_args_bytes,
            max_result_bytes,
        )
        self.path: Optional[str] = None if path is None else os.fspath(path)
        #: The PostgreSQL database the jobs are in, when it is one (``url=``), else ``None``.
        self.url: Optional[str] = None if url is None else _check_url(url, self.path)
        # In a testing mode, the path or url is kept for code that shows it but never opened.
        self.testing: Optional[str] = testing_mode.resolve(testing)
        self._inline = self.testing == testing_mode.INLINE
        existed = self.path is not None and not self.testing and _store_exists(self.path, create)
        self._engine = Engine(
            None if self.testing else self.path,
            url=None if self.testing else self.url,
            migrate=bool(migrate),
            poll_interval=self.config.poll_interval,
            fsync=self.config.durability == FSYNC,
            scheduler_interval=self.config.scheduler_interval,
            prune_interval=self.config.prune_interval,
            retention_period=self.config.retention_period,
            manual_clock=_wall_micros() if clock == "manual" or self.testing else None,
            connect=bool(connect),
            lease=positive_seconds("lease", lease),
            takeover=bool(takeover) and _processes.may_take_over(self.path),
        )
        # The module that created the app: worker processes import it to find the app again.
        self._origin: str = sys._getframe(1).f_globals.get("__name__", "__main__")
        self._pool: Optional[_processes.ProcessPool] = None
        self._workers: dict[str, Registration] = {}
        # Per worker, the checked row of a job given no options but args: most inserts are
        # that, and re-checking the worker's defaults each time was half the cost of a new().
        # Valid while the registration and the app's queues stay as they are (both are fixed
        # once made today; dynamic queues would have to clear it).
        self._plain_specs: dict[str, tuple[Registration, JobSpec]] = {}
        self._crontab = Crontab(self)
        self._lock = threading.Lock()
        self._runner: Optional[Runner] = None
        # This process's local_only queue changes, applied by its runner on top of the store's.
        self._local_queues = _queues.LocalQueues()
        # Set in a worker process of a pool, where sync jobs' timeouts are enforced.
        self._in_worker_process = False
        # In a worker process of a pool: (its index, processes), to split runtime concurrency.
        self._pool_share = (0, 1)
        self._closed = threading.Event()
        self._events = EventPump(self._engine, self._closed)
        self._unwatch = telemetry.watch(self._telemetry_changed)
        self._telemetry_changed()
        _processes.remember(self)
        try:
            _queues.apply_declared(self)
        except BaseException:
            self.close()
            raise
        if self.path is not None and not self.testing:
            _log_open(self.path, existed, self._engine.role, self._engine.owner_pid)
        if self.url is not None and not self.testing:
            logging.getLogger(OPEN_LOGGER).info(
                "opened the PostgreSQL database %s as one of its nodes", _redacted(self.url)
            )
        if self._engine.serve_error is not None:
            log.warning(
                "the store %s is not served to other processes: %s; other processes that open "
                "it get StorageLockedError",
                self.path,
                self._engine.serve_error,
            )

    @property
    def role(self) -> str:
        """``"owner"`` when this process owns the store file (and serves it to other
        processes on a socket beside it), ``"client"`` when it uses the owner's socket. It can
        change: a client whose owner went away becomes the owner on its next call if no other
        process took the store first. ``"node"`` on a PostgreSQL database (``url=``), where
        every process is a peer."""
        return self._engine.role

    @property
    def owner_pid(self) -> int:
        """The process id of the store's owner (``os.getpid()`` when :attr:`role` is
        ``"owner"``)."""
        return self._engine.owner_pid

    @property
    def store_failure(self) -> Optional[str]:
        """Why this process's store stopped writing, or ``None`` while it is healthy.

        Set when this process owns the store and a commit failed (a full disk, say): the
        engine then writes nothing more, every write raises :class:`StorageError`, and the
        app's workers stop claiming (with one ERROR log line). It stays set until the app is
        closed: once the cause is fixed, close the app and open it again (which replays the
        store's log), or let the process exit (``kathikon worker`` exits with status 75 by
        itself) for a supervisor to restart it."""
        return self._engine.failure

    # -- workers -------------------------------------------------------------------------

    @overload
    def worker(self, fn: Callable[[Job], Any], /) -> WorkerFunction: ...

    @overload
    def worker(
        self,
        fn: None = None,
        /,
        *,
        queue: str = "default",
        max_attempts: Optional[int] = None,
        priority: int = 0,
        timeout: Optional[float] = None,
        tags: Iterable[str] = (),
        backoff: Optional[Callable[[Job], Optional[float]]] = None,
        name: Optional[str] = None,
        cron: Optional[str] = None,
        cron_timezone: str = DEFAULT_TIMEZONE,
        unique: Optional[Unique] = None,
        store_result: bool = True,
        cancel: Optional[str] = None,
    ) -> Callable[[Callable[[Job], Any]], WorkerFunction]: ...

    def worker(
        self,
        fn: Optional[Callable[[Job], Any]] = None,
        /,
        *,
        queue: str = "default",
        max_attempts: Optional[int] = None,
        priority: int = 0,
        timeout: Optional[float] = None,
        tags: Iterable[str] = (),
        backoff: Optional[Callable[[Job], Optional[float]]] = None,
        name: Optional[str] = None,
        cron: Optional[str] = None,
        cron_timezone: str = DEFAULT_TIMEZONE,
        unique: Optional[Unique] = None,
        store_result: bool = True,
        cancel: Optional[str] = None,
    ) -> Union[WorkerFunction, Callable[[Callable[[Job], Any]], WorkerFunction]]:
        """Register a function (sync or ``async def``) taking a :class:`Job` as a worker.

        Usable bare (``@app.worker``) or with settings (``@app.worker(queue="emails")``).
        ``timeout`` (seconds): an async job is cancelled past it; a sync job's thread cannot
        be, so its timeout holds in worker processes (``processes=N``), where the job is
        recorded as failed and its process replaced (``start`` without them refuses to run
        such a worker; ``drain`` does not enforce it). ``cancel="kill"`` (sync workers): a
        cancel of a running job ends the worker process that runs it, as a timeout does
        (without it the job runs on and its outcome is refused). ``backoff(job)`` returns
        the seconds before a retry (``None`` for the default exponential backoff).
        ``cron`` (with ``cron_timezone``, default UTC) also declares a cron entry named after
        the worker that inserts a job with no args on each slot: see :meth:`cron`.
        ``unique`` (a :class:`~kathikon.Unique`) makes every insert of the worker unique
        unless the insert says otherwise. What the function returns is kept as the job's
        result (``job.result``, :meth:`result`) unless ``store_result=False``.
        """

        def decorate(func: Callable[[Job], Any]) -> WorkerFunction:
            if not callable(func):
                raise ConfigurationError(f"@app.worker needs a function, got {shown(func)}")
            reg = make_registration(
                name=name or qualified_name(func),
                queue=queue,
                max_attempts=max_attempts,
                priority=priority,
                timeout=timeout,
                tags=list(tags),
                perform=func,
                backoff=backoff,
                known_queues=list(self.config.queues),
                unique=unique,
                result_limit=self._result_limit(store_result),
                cancel=cancel,
            )
            self._add(reg)
            self._declare_cron(reg, cron, cron_timezone)
            return WorkerFunction(self, func, reg)

        return decorate(fn) if fn is not None else decorate

    def register(self, worker: _Registrable) -> _Registrable:
        """Register a :class:`Worker` subclass (instantiated once, without arguments) or an
        instance. Returns what it was given, so it also works as a class decorator."""
        instance = worker() if isinstance(worker, type) else worker
        if not isinstance(instance, Worker):
            raise ConfigurationError(
                f"register() takes a kathikon.Worker subclass, got {shown(worker)}; "
                "decorate plain functions with @app.worker instead"
            )
        cls = type(instance)
        backoff = instance.backoff if cls.backoff is not Worker.backoff else None
        reg = make_registration(
            name=cls.name or qualified_name(cls),
            queue=cls.queue,
            max_attempts=cls.max_attempts,
            priority=cls.priority,
            timeout=cls.timeout,
            tags=list(cls.tags),
            perform=instance.perform,
            backoff=backoff,
            known_queues=list(self.config.queues),
            unique=cls.unique,
            result_limit=self._result_limit(cls.store_result),
            cancel=cls.cancel,
        )
        self._add(reg)
        self._declare_cron(reg, cls.cron, cls.cron_timezone)
        return worker

    def _result_limit(self, store_result: Any) -> Optional[int]:
        """The largest result a worker keeps: the app's ``max_result_bytes``, or None with
        ``store_result=False``."""
        if not isinstance(store_result, bool):
            raise ConfigurationError(f"store_result={shown(store_result)} must be True or False")
        return self.config.max_result_bytes if store_result else None

    # -- results -------------------------------------------------------------------------

    def result(self, job_id: int, timeout: Optional[float] = None) -> Any:
        """Wait for job ``job_id`` to finish and return its result: what its worker returned
        (decoded from JSON), or None if it kept none. A retryable job has not finished: the
        wait goes on through its retries. The store wakes the wait when the job finishes (no
        polling), whether it ran here, in a worker process, in another app on the same store
        or on another node of a PostgreSQL database.

        Raises:
            JobFailedError: the job was discarded (``.job`` is the job, with its errors).
            JobCancelledError: the job was cancelled (``.job``).
            ResultTimeoutError: ``timeout`` seconds passed first (``.job``, as it stood);
                also a ``TimeoutError``.
            JobNotFoundError: no job has this id (it never existed, or was deleted).
        """
        job = _results.wait(self._engine, job_id, timeout, sliced=False)
        return _results.result_of(job, timeout)

    async def aresult(self, job_id: int, timeout: Optional[float] = None) -> Any:
        """:meth:`result` for ``async`` code: the wait runs in the event loop's default
        executor, in slices of about a second, so cancelling the awaiting task frees its
        thread within one."""
        loop = asyncio.get_running_loop()
        job = await loop.run_in_executor(None, _results.wait, self._engine, job_id, timeout, True)
        return _results.result_of(job, timeout)

    def _add(self, reg: Registration) -> None:
        with self._lock:
            if reg.name in self._workers:
                raise ConfigurationError(
                    f"a worker named {reg.name!r} is already registered with this app; "
                    "give one of them another name (name=...)"
                )
            self._workers[reg.name] = reg

    def _resolve(self, worker: Any) -> Registration:
        if isinstance(worker, WorkerFunction):
            name = worker.name
        elif isinstance(worker, str):
            name = worker
        elif isinstance(worker, type) and issubclass(worker, Worker):
            name = worker.name or qualified_name(worker)
        elif isinstance(worker, Worker):
            name = type(worker).name or qualified_name(type(worker))
        else:
            raise UnknownWorkerError(
                f"{shown(worker)} is not a worker; pass a function decorated with @app.worker, "
                "a registered kathikon.Worker subclass, or a registered worker name"
            )
        reg = self._workers.get(name)
        if reg is None or (isinstance(worker, WorkerFunction) and worker.registration is not reg):
            raise UnknownWorkerError(_unregistered(self, worker, name))
        return reg

    @property
    def workers(self) -> dict[str, Registration]:
        """Registered workers by name."""
        return dict(self._workers)

    # -- inserting -----------------------------------------------------------------------

    def new(
        self,
        worker: WorkerRef,
        args: Optional[Mapping[str, Any]] = None,
        **options: Unpack[JobOptions],
    ) -> JobSpec:
        """Check and encode a job without storing it (for :meth:`insert_all`); options as
        for :meth:`insert`."""
        return self._new(self._resolve(worker), args, options)

    def _new(  # noqa: C901 - one pass over the options, inline: see below
        self, reg: Registration, args: Optional[Mapping[str, Any]], options: JobOptions
    ) -> JobSpec:
        """:meth:`new` for a registration of this app, the options as one dict (a worker's
        ``new()`` calls it directly: the bulk path, where forwarding keywords and resolving
        the worker again were a third of the time)."""
        queue: Optional[str] = None
        priority: Optional[int] = None
        schedule_in: Optional[Seconds] = None
        schedule_at: Optional[datetime] = None
        max_attempts: Optional[int] = None
        tags: Optional[Iterable[str]] = None
        meta: Optional[Mapping[str, Any]] = None
        unique: Any = None
        replace: Any = None
        nones = 0
        if options:
            # One pass over the (one or two, typically) options given, here rather than in a
            # helper and rather than a get() per option: on the bulk path each of those cost
            # more than binding a keyword argument did.
            given: Iterable[tuple[str, Any]] = options.items()
            for name, value in given:
                nones += value is None
                if name == "schedule_at":
                    schedule_at = value
                elif name == "schedule_in":
                    schedule_in = value
                elif name == "priority":
                    priority = value
                elif name == "queue":
                    queue = value
                elif name == "meta":
                    meta = value
                elif name == "tags":
                    tags = value
                elif name == "max_attempts":
                    max_attempts = value
                elif name == "unique":
                    unique = value
                elif name == "replace":
                    replace = value
                else:
                    check_option_names(options, JOB_OPTION_NAMES)
        plain = nones == len(options)  # no option given, or each as None: the defaults hold
        if plain:
            # The spec the worker's defaults made last time serves again, as it is (specs are
            # immutable) or with these args.
            cached = self._plain_specs.get(reg.name)
            if cached is not None and cached[0] is reg:
                if args is None:
                    return cached[1]
                args_json = self._args_json(args)
                return cached[1] if args_json == "{}" else cached[1]._with_args(args_json)
        queue = reg.queue if queue is None else queue
        if queue not in self.config.queues and not self._started_at_runtime(queue):
            raise UnknownQueueError(
                f"queue {queue!r} is not configured in this app; configured queues: "
                f"{', '.join(self.config.queues)} (add it to Kathikon(queues=...), or start "
                f"it with app.start_queue({queue!r}, concurrency))"
            )
        attempts = check_max_attempts(
            max_attempts
            if max_attempts is not None
            else (reg.max_attempts or self.config.max_attempts)
        )
        args_json = self._args_json(args)
        spec = job_spec(
            queue,
            reg.name,
            args_json,
            encode_json(meta, "meta"),
            check_tags(reg.tags if tags is None else tags),
            attempts,
            check_priority(reg.priority if priority is None else priority),
            None
            if schedule_in is None and schedule_at is None
            else scheduled_at_micros(self._engine.now(), schedule_in, schedule_at),
            None
            if reg.unique is None and unique is None and replace is None
            else _unique_spec(reg, unique, replace),
        )
        if plain:
            # Kept with no args, so that the cached path above may hand it out as it is.
            bare = spec if args_json == "{}" else spec._with_args("{}")
            self._plain_specs[reg.name] = (reg, bare)
        return spec

    def _args_json(self, args: Optional[Mapping[str, Any]]) -> str:
        args_json = encode_json(args, "args")
        limit = self.config.max_args_bytes
        if limit is not None and len(args_json) > limit // 4 and len(args_json.encode()) > limit:
            raise InvalidJobError(
                f"args encode to {len(args_json.encode()):,} bytes of JSON, more than "
                f"max_args_bytes={limit:,}; store large data elsewhere and pass a reference "
                "(a path, a URL, an id), or raise the limit"
            )
        return args_json

    def insert(
        self,
        worker: WorkerRef,
        args: Optional[Mapping[str, Any]] = None,
        *,
        conn: Any = None,
        **options: Unpack[JobOptions],
    ) -> Job:
        """Store a job and return it. Durable (fsync'd) before it returns, by default.

        Args:
            worker: a ``@app.worker`` function, a registered :class:`Worker`, or its name.
            args: a dict of JSON values, handed to the worker as ``job.args``.
            conn: on a PostgreSQL store (``url=``), your own database connection (psycopg 3
                connection or cursor, a psycopg2 cursor, Django's ``connection.cursor()``): the
                job is inserted in its current transaction and exists only once that commits
                (see docs/guides/postgres.md). Not with ``unique``. In a testing mode the job
                goes to the in-memory store as usual.

        Keyword Args:
            queue (str): defaults to the worker's queue.
            priority (int): 0 (runs first) … 9; defaults to the worker's.
            schedule_in (float | timedelta): seconds or a timedelta from now. Not with
                ``schedule_at``.
            schedule_at (datetime): an aware datetime. Not with ``schedule_in``.
            max_attempts (int): attempts before the job is discarded; defaults to the
                worker's, then the app's.
            tags (Iterable[str]): strings to label the job.
            meta (Mapping[str, Any]): a dict of JSON values kept with the job.
            unique (Unique | False): return the existing job (``job.conflict`` set) instead
                of storing this one while a job with the same key exists; defaults to the
                worker's ``unique``, ``False`` turns it off for this insert.
            replace (Iterable[str]): with a unique insert that finds a job still scheduled,
                available or retryable, the fields to overwrite on it: ``args``, ``meta``,
                ``tags``, ``priority``, ``queue``, ``scheduled_at``, ``max_attempts``.

        Raises:
            InvalidJobError: (or its subclasses) a value is unusable; nothing was stored.
            StorageError: the write failed.
        """
        return self._insert_specs([self._new(self._resolve(worker), args, options)], conn)[0]

    def insert_all(self, specs: Iterable[JobSpec], *, conn: Any = None) -> list[Job]:
        """Store many jobs in one commit: all of them or, on any error, none. ``conn``: as
        for :meth:`insert`, all of them in your transaction."""
        return self._insert_specs(specs if type(specs) is list else list(specs), conn)

    def insert_batch(
        self,
        specs: Iterable[JobSpec],
        *,
        batch_id: Optional[str] = None,
        on_completed: Optional[WorkerRef] = None,
        on_discarded: Optional[WorkerRef] = None,
        on_cancelled: Optional[WorkerRef] = None,
        on_finished: Optional[WorkerRef] = None,
        args: Optional[Mapping[str, Any]] = None,
    ) -> Batch:
        """Store jobs (built with ``worker.new(...)`` or :meth:`new`) as one batch, in one
        commit, and return it (``.id``, ``.jobs``). When every member has finished, the store
        inserts, once, each callback whose condition holds — ``on_completed`` (every member
        completed), ``on_discarded`` (at least one discarded), ``on_cancelled`` (at least one
        cancelled), ``on_finished`` (always) — as a job of that worker with ``args``; its
        ``meta["batch"]`` names the batch and event, with the members' counts
        (:class:`kathikon.BatchCallback` reads it).

        ``batch_id``: None creates a batch with a fresh id. An id no batch has creates the
        batch under it; the id of a batch that exists adds the jobs to it (give no callbacks
        or args then: they were set when it was created). A batch whose members have all
        finished takes no more jobs.

        Raises:
            InvalidJobError: a bad job, callback or id; callbacks for a batch that exists; a
                batch that finished; a unique job (batch jobs cannot be unique). Nothing is
                stored.
            UnknownWorkerError: a callback worker is not registered with this app.
        """
        batch_id = _batches.new_batch_id() if batch_id is None else check_batch_id(batch_id)
        given = {
            "completed": on_completed,
            "discarded": on_discarded,
            "cancelled": on_cancelled,
            "finished": on_finished,
        }
        if args is not None and all(worker is None for worker in given.values()):
            raise InvalidJobError(
                "insert_batch(args=...) is what the batch's callbacks get; give at least one "
                "callback (on_completed=, on_discarded=, on_cancelled=, on_finished=) with it"
            )
        callbacks = {
            event: None if worker is None else self.new(worker, args)
            for event, worker in given.items()
        }
        native = _batches.callback_specs(callbacks)
        members = specs if type(specs) is list else list(specs)
        insert = partial(self._engine.insert_batch, batch_id, native or None)
        jobs = self._insert_specs(members, insert=insert)
        if self._inline:
            # The members ran: the callbacks the store inserted when the last one finished
            # run now too, as any insert does in this mode.
            fired = [i for i in self.batch(batch_id).callbacks.values() if i is not None]
            if fired:
                testing_mode.run_inserted(self, [self.get(i) for i in fired])
        return Batch(batch_id, jobs)

    def batch(self, batch_id: str) -> BatchStatus:
        """Batch ``batch_id`` as last committed: its members per state, whether it
        finished, and the callback jobs it inserted. Raises :class:`BatchNotFoundError` when
        no batch has this id."""
        return _batches.status_of(self._engine.batch(check_batch_id(batch_id)))

    def _insert_specs(
        self,
        specs: list[JobSpec],
        conn: Any = None,
        insert: Optional[Callable[[list[JobSpec]], list[Job]]] = None,
    ) -> list[Job]:
        if insert is not None:
            pass
        elif conn is not None and self.testing is None:
            insert = partial(_transactional.insert, self, conn=conn)
        else:
            insert = self._engine.insert
        if not telemetry.has_handlers(INSERT):
            jobs = insert(specs)
        else:
            started = time.perf_counter()
            jobs = insert(specs)
            telemetry.execute(
                INSERT,
                {"count": len(jobs), "duration": time.perf_counter() - started},
                {"jobs": jobs, "conflict": any(job.conflict for job in jobs)},
            )
        return testing_mode.run_inserted(self, jobs) if self._inline else jobs

    # -- managing jobs -------------------------------------------------------------------

    @staticmethod
    def _id(job: Union[Job, int]) -> int:
        if isinstance(job, Job):
            return job.id
        if isinstance(job, bool) or not isinstance(job, int):
            raise InvalidJobError(f"job id {shown(job)} must be an int or a kathikon.Job")
        if job < 0:
            raise InvalidJobError(f"job id {job} is negative; ids are positive ints")
        if job > MAX_JOB_ID:
            raise JobNotFoundError(f"no job with id {job}; ids are at most 2**64 - 1")
        return job

    def get(self, job: Union[Job, int]) -> Job:
        """The job as stored now. Raises :class:`JobNotFoundError` for an unknown id, and
        :class:`CorruptStoreError` (naming the file, the job and the damage) for a job whose
        record was found damaged on disk and quarantined."""
        return self._engine.get(self._id(job))

    def quarantined(self) -> list[QuarantinedRecord]:
        """Job records found damaged on disk (they no longer decode, or fail their checksum)
        and moved aside, so that the rest of the store keeps working: each with its id, when,
        why, and its bytes as found. Each one also emits ``("kathikon", "job", "quarantine")``."""
        return [
            QuarantinedRecord(
                id=id_,
                quarantined_at=from_micros(at),
                reason=reason,
                data=data,
            )
            for id_, at, reason, data in self._engine.quarantined()
        ]

    def cancel(self, job: Union[Job, int]) -> Job:
        """Cancel a scheduled, available, retryable or executing job.

        An executing async job here is cancelled at its next ``await``; an executing sync job
        runs on, but its result is ignored. A finished job is returned unchanged.
        """
        record, before = self._engine.cancel(self._id(job))
        if before == "executing" and self._runner is not None:
            self._runner.cancel_running(record.id)
        return record

    def retry(self, job: Union[Job, int]) -> Job:
        """Make a scheduled, retryable or finished job available now (one more attempt is
        allowed if it had used them all). Raises :class:`JobStateError` for an executing job."""
        return self._engine.retry(self._id(job))

    def delete(self, job: Union[Job, int], *, force: bool = False) -> None:
        """Delete a finished (completed, cancelled, discarded) job; with ``force=True``, a job
        in any state (an executing job's worker then finds it gone when it reports). Raises
        :class:`JobNotFoundError` for an unknown id and :class:`JobStateError` for an
        unfinished job without ``force``. :meth:`delete_jobs` deletes by filter."""
        if not isinstance(force, bool):
            raise InvalidJobError(f"force {shown(force)} must be True or False")
        job_id = self._id(job)
        # The id bounds select this one job; the walk between them reads one record.
        only = ListFilter(
            after=job_id - 1 if job_id > 0 else None,
            before=job_id + 1 if job_id < MAX_JOB_ID else None,
        )
        if self._engine.bulk("delete", only, force):
            return
        state = self.get(job_id).state  # JobNotFoundError when there is no such job
        raise JobStateError(
            f"job {job_id} is {state.value}: only finished jobs are deleted; pass force=True "
            "to delete it anyway, or cancel it first"
        )

    def jobs(
        self,
        state: Optional[States] = None,
        queue: Optional[str] = None,
        worker: Optional[WorkerRef] = None,
        limit: int = 100,
        after: Optional[int] = None,
        *,
        order: Order = "asc",
        cursor: Optional[str] = None,
        **filters: Unpack[JobFilterExtras],
    ) -> JobPage:
        """Stored jobs matching every filter given, oldest id first (``order="desc"``: newest
        first), at most ``limit`` of them: a :class:`JobPage`, a list whose ``cursor`` continues
        the listing (``app.jobs(..., cursor=page.cursor)``; ``None`` on the last page).

        ``state`` may be a list of states; ``tags`` jobs having all of them; ``args`` and
        ``meta`` select jobs whose args (meta) *contain* the given JSON (``{"user_id": 7}``
        matches any job whose args hold that key with that value, nested objects and arrays
        alike); times (``inserted_after`` … ``finished_before``) are aware datetimes or epoch
        seconds, ``*_after`` inclusive and ``*_before`` exclusive. ``after`` (a job id) is the
        older way to page, ascending only."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit < 2**64:
            raise InvalidJobError(
                f"limit {shown(limit)} must be an int from 1 to 2**64 - 1; to read every job, "
                "page through them with cursor=<the previous page's cursor>"
            )
        if after is not None and (
            isinstance(after, bool) or not isinstance(after, int) or not 0 <= after < 2**64
        ):
            raise InvalidJobError(
                f"after {shown(after)} must be a job id (an int from 0 to 2**64 - 1) or None; "
                "pass the last id of the previous page, or None for the first page"
            )
        given = dict(filters, state=state, queue=queue, worker=worker)
        # One more than asked says whether another page follows.
        ask = min(limit + 1, 2**64 - 1)
        query = build_filter(
            given, self._worker_name, order=order, limit=ask, after=after, cursor=cursor
        )
        records = self._engine.list_by(query)
        more = len(records) > limit
        page = records[:limit]
        next_cursor = encode_cursor(order, page[-1].id) if more and page else None
        return JobPage(page, next_cursor)

    def count(self, **filters: Unpack[JobFilter]) -> int:
        """How many stored jobs match the filters of :meth:`jobs` (all jobs without any).
        States and a queue alone are answered from the stored counts, at once."""
        return self._engine.count(build_filter(filters, self._worker_name))

    def cancel_jobs(self, **filters: Unpack[JobFilter]) -> int:
        """Cancel every job matching the filters of :meth:`jobs` that is not finished yet;
        returns how many were cancelled. Done in chunks of at most 1,000 jobs per commit, so
        other callers are never held up for long; each job is checked against the filters
        again as it is cancelled. An executing job's result is ignored when it finishes."""
        return self._engine.bulk("cancel", build_filter(filters, self._worker_name))

    def retry_jobs(self, **filters: Unpack[JobFilter]) -> int:
        """Make every scheduled, retryable or finished job matching the filters of
        :meth:`jobs` available now (executing and available ones are left alone); returns
        how many. Chunked as :meth:`cancel_jobs` is."""
        return self._engine.bulk("retry", build_filter(filters, self._worker_name))

    def delete_jobs(self, *, force: bool = False, **filters: Unpack[JobFilter]) -> int:
        """Delete every finished (completed, cancelled, discarded) job matching the filters
        of :meth:`jobs`; with ``force=True``, jobs in any state (an executing job's worker
        then finds it gone when it reports). Returns how many; chunked as
        :meth:`cancel_jobs` is."""
        if not isinstance(force, bool):
            raise InvalidJobError(f"force {shown(force)} must be True or False")
        query = build_filter(filters, self._worker_name)
        return self._engine.bulk("delete", query, force)

    def _worker_name(self, worker: WorkerRef) -> str:
        return worker if isinstance(worker, str) else self._resolve(worker).name

    def stats(self) -> dict[str, dict[str, int]]:
        """Jobs per queue and state, e.g. ``{"emails": {"available": 3, "completed": 9}}``.

        Exact as of the last acknowledged write and cheap: one small table is read, without
        making the writer commit what it keeps back, so a dashboard can poll it every few
        milliseconds. Every configured queue is present, with every state (0 when empty).
        """
        out = {q: {s.value: 0 for s in JobState} for q in self.config.queues}
        for queue, state, count in self._engine.counts():
            out.setdefault(queue, {s.value: 0 for s in JobState})[state] = count
        return out

    def queue_depths(self) -> dict[str, int]:
        """Available (ready to run) jobs per queue."""
        return {queue: states["available"] for queue, states in self.stats().items()}

    def oldest_available(self, queue: str) -> Optional[datetime]:
        """When the longest-waiting available job of ``queue`` became due (``None`` if none)."""
        us = self._engine.oldest_available(queue)
        return None if us is None else from_micros(us)

    def check_queue(self, queue: str) -> QueueCheck:
        """Whether a running process serves ``queue``, with its available and executing
        jobs: ``check.served`` is ``False`` (and ``check.summary`` says "no process runs it")
        when no worker claimed from it lately, so jobs that would sit available forever are
        visible. Also its runtime settings: ``paused``, ``stopped``, ``started`` and the
        ``concurrency`` a worker of this app runs it at (``configured_concurrency``: the
        constructor's). Any queue name is accepted, configured in this app or not."""
        if not isinstance(queue, str) or not queue:
            raise ConfigurationError(f"check_queue({shown(queue)}): pass a queue name (a str)")
        return self._check_queues([queue])[0]

    def _check_queues(self, names: list[str]) -> list[QueueCheck]:
        counts: dict[str, dict[str, int]] = {}
        for q, state, n in self._engine.counts():
            counts.setdefault(q, {})[state] = n
        claimers = {c[0]: c for c in self._engine.claimers()}
        settings = _queues.stored(self._engine)[1]
        local = self._local_queues.all()
        out = []
        for queue in names:
            count = counts.get(queue, {})
            claimer = claimers.get(queue)
            mine = settings.get(queue, QueueSettings(queue)).merged(local.get(queue))
            configured = self.config.queues.get(queue)
            runs = configured is not None or mine.started is not None
            paused_here = queue in local and local[queue].paused
            available = count.get(JobState.AVAILABLE.value, 0)
            out.append(
                QueueCheck(
                    queue=queue,
                    available=available,
                    executing=count.get(JobState.EXECUTING.value, 0),
                    oldest_available=self.oldest_available(queue) if available else None,
                    claimer_pid=None if claimer is None else claimer[1],
                    idle=None if claimer is None else claimer[2],
                    paused=mine.paused,
                    stopped=mine.stopped,
                    started=mine.started,
                    concurrency=mine.concurrency_here(configured, paused_here) if runs else None,
                    configured_concurrency=configured,
                    global_limit=mine.global_limit,
                    rate_limit=mine.rate_limit,
                    limit_usage=_queues.usage(self._engine, mine),
                )
            )
        return out

    def prune(self, older_than: float = 0.0) -> int:
        """Delete finished jobs that finished more than ``older_than`` seconds ago."""
        return self._engine.prune(older_than)

    def now(self) -> datetime:
        """The app's current time (the manual clock's, when ``clock="manual"``)."""
        return from_micros(self._engine.now())

    def advance_clock(self, seconds: Seconds) -> None:
        """Move a ``clock="manual"`` app's time forward; jobs that become due are promoted."""
        self._engine.advance_clock(seconds_of(seconds, "seconds"))
        self._engine.sync()

    # -- running -------------------------------------------------------------------------

    def start(
        self,
        queues: Optional[QueueSelection] = None,
        *,
        processes: Union[int, Literal["auto"], None] = None,
        grace: float = 30.0,
        max_threads: Optional[int] = None,
    ) -> None:
        """Run workers in background threads until :meth:`stop`.

        ``queues`` runs only some of the configured queues: their names (each at its
        configured concurrency) or a dict of name → concurrency. Default: every queue.

        Each queue gets ``concurrency`` threads of its own while the queues' concurrency adds
        up to at most ``max_threads`` (default: ``max(256, 8 × CPUs)``); beyond it,
        ``max_threads`` threads are shared by all the queues, each queue still running at
        most ``concurrency`` jobs at once, so thousands of queues cost no more threads than
        a few. Async jobs run on one event loop thread and are not bound by it.

        ``processes=N`` runs the jobs in N child processes instead (past the GIL, for
        CPU-bound jobs; ``"auto"``: one per CPU core this process may use); this process
        keeps the store and runs none itself. Each queue's
        concurrency is split between the children, so it holds across them together. The
        app must be created at module level, where the children can import it, and needs a
        store file. ``grace`` is how long each child waits for its running jobs when stopped.

        In a testing mode (``testing=``, ``KATHIKON_TESTING``) no worker starts: the queues
        are checked, a line is logged, and jobs run only when a test drains them.
        """
        selected = self._select_queues(queues)
        if max_threads is not None and (
            isinstance(max_threads, bool) or not isinstance(max_threads, int) or max_threads < 1
        ):
            raise ConfigurationError(
                f"max_threads={shown(max_threads)} must be an int of at least 1 (the most threads "
                "that run sync jobs), or None for the default"
            )
        if self.testing is not None:
            testing_mode.not_started(self)
            return
        with self._lock:
            if self._runner is not None or self._pool is not None:
                raise ConfigurationError("this app is already running; call stop() first")
            if processes is not None:
                pool = _processes.ProcessPool(self, selected, processes)
                pool.start(grace)
                self._pool = pool
                return
            self._runner = Runner(self, selected, max_threads, self._pool_share)
            self._runner.start()

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the worker processes started by ``start(processes=N)`` (empty
        otherwise)."""
        pool = self._pool
        return [] if pool is None else pool.pids

    def _select_queues(self, queues: Optional[QueueSelection]) -> dict[str, int]:
        configured = self.config.queues
        if queues is None:
            return dict(configured)
        if isinstance(queues, str):
            queues = [queues]
        pairs = (
            list(queues.items())
            if isinstance(queues, Mapping)
            else [(name, configured.get(name)) for name in queues]
        )
        selected: dict[str, int] = {}
        for name, concurrency in pairs:
            if name not in configured:
                raise ConfigurationError(
                    f"queue {name!r} is not configured in this app; configured queues: "
                    f"{', '.join(configured)}"
                )
            selected[name] = parse_concurrency(name, concurrency)
        if not selected:
            raise ConfigurationError("queues= selects no queue; name at least one, or pass None")
        return selected

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop claiming jobs and wait up to ``timeout`` seconds for running ones. Jobs still
        running then are handed back as *interrupted by shutdown*: due again at once, the
        attempt not counted, the reason in their history, and logged (WARNING, logger
        ``kathikon``) with their ids and workers. An async job's task is cancelled; a sync
        job's thread cannot be, and what it returns afterwards is dropped.
        Returns whether every running job finished."""
        with self._lock:
            runner, self._runner = self._runner, None
            pool, self._pool = self._pool, None
        if pool is not None:
            return pool.stop(timeout)
        return True if runner is None else runner.stop(timeout)

    def run(
        self,
        queues: Optional[QueueSelection] = None,
        *,
        processes: Union[int, Literal["auto"], None] = None,
    ) -> None:
        """Run workers in this thread until SIGINT or SIGTERM, then stop gracefully.
        ``queues`` and ``processes`` are as for :meth:`start`. Raises
        :class:`ConfigurationError` in a testing mode, where no worker runs, and
        :class:`StorageError` when the store this process owns stops writing (see
        :attr:`store_failure`), without waiting for running jobs."""
        if self.testing is not None:
            raise testing_mode.refuse_run(self, "app.run()")
        stop = StopRequest()
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
        failure: Optional[str] = None
        try:
            self.start(queues, processes=processes)
            while not stop.wait(0.5):
                failure = self.store_failure
                if failure is not None:
                    # No outcome can be recorded any more: waiting for running jobs is moot.
                    raise StorageError(
                        f"the store {self.path} stopped writing: {failure}; app.run() "
                        "gives up so that the process can exit and be restarted (its open "
                        "replays the store's log)"
                    )
        except KeyboardInterrupt:
            pass
        finally:
            self.stop(0.0 if failure is not None else 30.0)
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            stop.close()

    def drain(
        self, queue: Optional[str] = None, *, with_scheduled: Union[bool, datetime] = False
    ) -> dict[str, int]:
        """Run every job that is due now, in this thread, until none is left; for tests.

        Jobs a run makes due again at once (a zero backoff, ``Snooze(0)``) run too. Returns
        how many attempts ended in each state: ``completed``, ``retryable``, ``discarded``,
        ``cancelled``, ``scheduled`` (snoozed).

        ``with_scheduled=True`` also runs scheduled and retryable jobs as if their time had
        come, before every round, so retries run until the job completes or uses up its
        attempts, and jobs scheduled by jobs run too; an aware datetime runs only those due
        by then. Promotion is store-wide: with ``queue``, other queues' jobs due by then
        become available (but do not run). The clock does not move.
        """
        return _drain.drain(self, queue, with_scheduled)

    def _telemetry_changed(self) -> None:
        # Watched through the app, so the watcher list keeps an app that is not closed alive
        # (as the store's owner that worker processes look up).
        self._events.telemetry_changed()

    # -- closing -------------------------------------------------------------------------

    def close(self, timeout: float = 30.0) -> None:
        """Stop workers (waiting up to ``timeout`` s), commit what is pending and release the
        store file. Safe to call twice."""
        self.stop(timeout)
        self._closed.set()
        self._unwatch()
        self._engine.close()
        self._events.join(timeout=2)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def __enter__(self) -> Kathikon:
        """``with app:`` runs workers in the background for the block, then closes."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.testing is not None:
            return f"<Kathikon memory (testing={self.testing!r}) queues={self.config.queues}>"
        where = self.path or (self.url and _redacted(self.url)) or "memory"
        return f"<Kathikon {where} queues={self.config.queues}>"

    # -- queues at runtime (kathikon.queues) -----------------------------------------------

    def pause_queue(self, queue: str, *, local_only: bool = False) -> QueueSettings:
        """Start no new job of ``queue`` in any process of the store until
        :meth:`resume_queue`; running jobs finish. Exact: once this returns, no claim of the
        queue succeeds anywhere. Stored: the queue stays paused across restarts.
        ``local_only=True`` stops this process's workers claiming from it, and stores
        nothing. Emits ``("kathikon", "queue", "pause")``."""
        queue = _queues.check_known(self, queue, "pause_queue")
        return _queues.change(self, queue, "pause", local_only=local_only)

    def resume_queue(self, queue: str, *, local_only: bool = False) -> QueueSettings:
        """Undo :meth:`pause_queue`: idle workers of ``queue`` claim its jobs at once."""
        queue = _queues.check_known(self, queue, "resume_queue")
        return _queues.change(self, queue, "resume", local_only=local_only)

    def scale_queue(
        self,
        queue: str,
        concurrency: Union[int, None, Unset] = UNSET,
        *,
        global_limit: Union[GlobalLimitSpec, Unset] = UNSET,
        rate_limit: Union[RateLimitSpec, Unset] = UNSET,
        local_only: bool = False,
    ) -> QueueSettings:
        """Run ``queue`` at ``concurrency`` in every worker of the store (each ``app.start()``
        or ``kathikon worker``; a ``processes=N`` pool splits it as it splits configured
        concurrency), within a second, and in workers started later. ``None`` goes back to
        each worker's configured concurrency.

        ``global_limit`` (an int, or ``{"allowed": n, "partition": {...}}``) and
        ``rate_limit`` (``{"allowed": n, "period": seconds, "partition": {...}}``) set the
        queue's limits over every process of the store; ``None`` removes one. A setting left
        out stays as it is. See the limits guide."""
        queue = _queues.check_known(self, queue, "scale_queue")
        return _queues.scale(self, queue, concurrency, global_limit, rate_limit, local_only)

    def start_queue(
        self, queue: str, concurrency: Optional[int] = None, *, local_only: bool = False
    ) -> QueueSettings:
        """Run ``queue`` in every worker of the store within a second, at ``concurrency``,
        though no app declares it, and allow inserting into it; or run a stopped queue
        again (``concurrency`` may then be left out). Stored: workers started later run it
        too, until :meth:`stop_queue`."""
        if not isinstance(queue, str) or not queue:
            raise ConfigurationError(f"start_queue({shown(queue)}): pass a queue name (a str)")
        if concurrency is None and queue not in self.config.queues and not local_only:
            if _queues.stored(self._engine)[1].get(queue, QueueSettings(queue)).started is None:
                raise ConfigurationError(
                    f"start_queue({queue!r}): queue {queue!r} is not configured in this app, "
                    f"so pass its concurrency, e.g. app.start_queue({queue!r}, 4)"
                )
        return _queues.change(self, queue, "start", concurrency, local_only)

    def stop_queue(self, queue: str, *, local_only: bool = False) -> QueueSettings:
        """Stop running ``queue`` in every worker of the store within a second (jobs running
        finish); its jobs stay stored, and :meth:`start_queue` runs it again."""
        queue = _queues.check_known(self, queue, "stop_queue")
        return _queues.change(self, queue, "stop", local_only=local_only)

    def queues(self) -> list[QueueCheck]:
        """Every queue, by name, as :meth:`check_queue` sees it: those this app declares,
        those with runtime settings, and those holding jobs."""
        names = {*self.config.queues, *_queues.stored(self._engine)[1]}
        names.update(q for q, _, n in self._engine.counts() if n)
        return self._check_queues(sorted(names))

    def metrics(
        self,
        since: Union[datetime, timedelta, None] = None,
        queue: Optional[str] = None,
    ) -> list[_metrics.MetricPoint]:
        """History for charts: per queue and per minute, the jobs completed, attempts failed
        (to be retried), jobs discarded and cancelled, and attempt duration percentiles
        (:class:`MetricPoint`), oldest first. ``since``: an aware datetime, or a timedelta
        meaning that long ago (the last 24 hours, all that is kept, when ``None``); ``queue``:
        one queue only. Whatever ended before the call counts, the running minute's too."""
        return _metrics.read(self._engine, since, queue)

    def progress(self, job: Union[Job, int]) -> Optional[_progress.Progress]:
        """Job ``job``'s latest progress as its worker reported it with
        :meth:`Job.progress <kathikon.Job.progress>` (:class:`Progress`: fraction, note, when,
        which attempt), kept after the job ends; ``None`` if it never reported any."""
        return _progress.read(self._engine, self._id(job))

    def processes(self) -> list[_process_info.ProcessInfo]:
        """The processes working on the store (:class:`ProcessInfo`): the owner first, then
        each process connected to it (worker processes, other apps on the same file), with
        its pid, lease, the jobs it is running and the queues it claims from."""
        return _process_info.read(self._engine)

    def _started_at_runtime(self, queue: object) -> bool:
        """Whether ``queue`` was started with :meth:`start_queue` (an allowed insert target,
        though not declared)."""
        if not isinstance(queue, str):
            return False
        settings = _queues.stored(self._engine)[1].get(queue)
        return settings is not None and settings.started is not None

    # -- cron ----------------------------------------------------------------------------

    def cron(
        self,
        expression: str,
        worker: WorkerRef,
        args: Optional[Mapping[str, Any]] = None,
        *,
        name: Optional[str] = None,
        timezone: str = DEFAULT_TIMEZONE,
        catch_up: str = SKIP,
        catch_up_limit: int = DEFAULT_CATCH_UP_LIMIT,
        **options: Unpack[JobOptions],
    ) -> None:
        """Insert a job for ``worker`` with ``args`` on every slot of ``expression``.

        ``expression`` has five fields (minute hour day-of-month month day-of-week), or six
        with seconds first, or is ``@hourly``, ``@daily``, ``@weekly``, ``@monthly``,
        ``@yearly`` or ``@reboot`` (once each time a process starts owning the store); names,
        ranges, steps and lists are allowed. It is read in ``timezone`` (an IANA name).
        ``name`` (default: the worker's name) is unique in the crontab; the last slot fired is
        stored under it, so no slot is inserted twice, whichever process fires it.
        ``catch_up`` says what happens to slots that passed while no process owned the store:
        ``"skip"`` (default; the next slot fires as usual), ``"once"`` (one job for them, their
        count and times in ``job.meta["cron"]["missed"]``), ``"all"`` (a job each, the newest
        ``catch_up_limit``). Other keywords are insert options (``priority``, ``queue``,
        ``tags``, ``meta``, ``max_attempts``). Each job's ``meta["cron"]`` holds the entry's
        ``name``, ``expression`` and ``slot`` (ISO-8601 in the entry's zone).

        Raises:
            ConfigurationError: a bad expression, time zone, catch-up policy or option, a
                name already declared, or a worker not registered with this app.
        """
        try:
            reg = self._resolve(worker)
        except UnknownWorkerError as e:
            raise ConfigurationError(f"cron({expression!r}, ...): {e}") from None
        self._crontab.add(expression, reg, args, name, timezone, catch_up, catch_up_limit, options)

    def _declare_cron(self, reg: Registration, cron: Optional[str], timezone: str) -> None:
        """The cron entry a worker declares with its registration (``cron=``); a refused
        one leaves the worker unregistered, as if the registration had failed."""
        if cron is None:
            return
        try:
            self._crontab.add(cron, reg, None, None, timezone, SKIP, DEFAULT_CATCH_UP_LIMIT, {})
        except BaseException:
            with self._lock:
                self._workers.pop(reg.name, None)
            raise

    def crontab(self) -> list[CronEntry]:
        """The declared crontab, each entry with its next run time (``next_at``) and the last
        slot that fired (``last_slot``, as the store's owner stored it)."""
        return self._crontab.entries()


def _unique_spec(reg: Registration, unique: Any, replace: Any) -> Optional[NativeUnique]:
    """The core's unique spec for an insert of ``reg`` given ``unique=`` and ``replace=``."""
    if unique is False:
        chosen = None
    elif unique is None:
        chosen = reg.unique
    elif isinstance(unique, Unique):
        chosen = unique
    else:
        raise InvalidJobError(
            f"unique={shown(unique)} must be a kathikon.Unique (or False for a plain insert), "
            "e.g. unique=kathikon.Unique(period=300)"
        )
    return native_unique(chosen, check_replace(replace))


def _unregistered(app: Kathikon, worker: Any, name: str) -> str:
    """Why ``worker`` cannot be used with ``app``, and the remedy that works for its kind."""
    if isinstance(worker, WorkerFunction):
        return (
            f"worker {name!r} is not registered with this app ({app!r}): it was decorated "
            f"with @app.worker on another app ({worker._app!r}), and a function worker belongs "
            "to the app it was decorated on. Use that app; in tests, make it a testing app "
            '(KATHIKON_TESTING="manual" in conftest.py before importing it) and have the '
            "kathikon_app fixture yield it with kathikon.testing.use(app)"
        )
    if isinstance(worker, str):
        known = ", ".join(sorted(app._workers)) or "none"
        return (
            f"worker {name!r} is not registered with this app (registered: {known}); "
            "decorate a function with @app.worker or pass a kathikon.Worker subclass to "
            "app.register() on this app first"
        )
    cls = worker if isinstance(worker, type) else type(worker)
    return (
        f"worker {name!r} is not registered with this app; call "
        f"app.register({cls.__name__}) on this app first"
    )
