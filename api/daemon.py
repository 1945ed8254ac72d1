"""``xcast6-engine run``: the runtime pipeline (api/pipeline.py) and the API under one event loop.

Start-up order: the pipeline (stored table, first fetch, engine links, packet workers) -> API.
SIGTERM/SIGINT stop gracefully (API first, then sync, then workers); SIGHUP re-reads the
file and applies new route-source settings without dropping the table; a crashed worker is
restarted by the supervisor while the table, the sync and the API keep running here.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from api import auth, tls
from api.bfdd import peers_for
from api.config import Config, ConfigError, load_config, read_or_create_token
from api.ha import HaController
from api.pipeline import Pipeline
from api.sdnotify import Notifier, PriorityPrefix, journal_stream
from api.state import EngineView
from api.syncport import SyncServiceView
from engine import __version__
from engine.dataplane import cpuidle
from engine.dataplane.cpuidle import CpuIdleLimit
from sync.registry import open_source, strip_secrets
from sync.source import Credentials, RouteSource, SourceError
from sync.store import StoreError

log = logging.getLogger("xcast6.daemon")
TOKEN_FILE = "api-token"


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def setup_logging(fmt: str, level: str) -> None:
    """Text without timestamps for journald (it adds its own), or one JSON object per line.

    Under systemd (stderr is the journal stream) every line starts with its ``<N>`` syslog
    priority, so ``journalctl -p warning`` shows the engine's warnings and errors only."""
    handler = logging.StreamHandler(sys.stderr)
    formatter: logging.Formatter = (
        _JsonFormatter() if fmt == "json" else logging.Formatter("%(levelname)s %(name)s: %(message)s")
    )
    handler.setFormatter(PriorityPrefix(formatter) if journal_stream() else formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # engine debug logs stay readable: libraries log their wire traffic at debug level
    for noisy in ("uvicorn.access", "pyroute2", "asyncio", "ncclient", "paramiko", "pysnmp", "multipart"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def api_token(cfg: Config) -> str:
    """The configured token, or one generated once and kept in the state directory (mode 0600)."""
    if cfg.api.token is not None:
        return cfg.api.token.reveal()
    path = cfg.engine.state_dir / TOKEN_FILE
    existed = path.exists()
    token = read_or_create_token(path)
    if not existed:
        log.info("no api.token configured: generated one in %s", path)
    return token


def api_tokens(cfg: Config) -> list[auth.ApiToken]:
    """Every token the API accepts (issue 20): the admin token above, then api.tokens_file's."""
    name = "api.token" if cfg.api.token is not None else TOKEN_FILE
    return auth.keyring_tokens(api_token(cfg), name, cfg.api.tokens_file)


def keep_off_worker_cpus(worker_cpus: set[int]) -> set[int] | None:
    """Move every thread of this process (sync, API, the kernel mirror) off the workers' CPUs.

    A pinned worker only has its CPU to itself if nothing else of the engine is scheduled there:
    an SNMP walk parsed in the sync thread would otherwise stall it for tens of milliseconds.
    Threads started later inherit the mask; forked workers then pin themselves.  Returns the
    CPUs the daemon keeps, or None when the workers cover every CPU it may use (then it shares).
    """
    allowed = os.sched_getaffinity(0)
    rest = allowed - worker_cpus
    if not rest:
        log.info("workers.cpus %s covers every CPU of the engine: the daemon shares them",
                 sorted(worker_cpus))
        return None
    refused = None
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), rest)
        except ProcessLookupError:      # a thread that just ended
            continue
        except OSError as exc:          # e.g. a seccomp filter without sched_setaffinity
            refused = exc
    if refused is not None:
        log.error("cannot move the daemon's threads off the worker CPUs %s: %s (a systemd unit must "
                  "allow sched_setaffinity: SystemCallFilter=sched_setaffinity)", sorted(worker_cpus),
                  refused.strerror or refused)
        return None
    log.info("daemon threads on CPUs %s, packet workers on %s", sorted(rest), sorted(worker_cpus))
    return rest


class Daemon:
    """One engine: build with a validated config, then ``await run()``."""

    def __init__(
        self,
        cfg: Config,
        *,
        source_factory: Callable[[str, Credentials], RouteSource] = open_source,
    ) -> None:
        self.cfg = cfg
        self._source_factory = source_factory
        self._stop = asyncio.Event()
        self.view: EngineView | None = None
        self.pipeline: Pipeline | None = None
        self.started = asyncio.Event()
        self.keyring = auth.Keyring()              # the API's tokens, replaced on SIGHUP
        self.tls: tls.ServerTls | None = None      # the API's TLS context, its certificate reloaded on SIGHUP
        self.notifier = Notifier()

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT or request_stop(); machine settings made for the workers
        (their CPUs' idle-state limit) are undone on the way out, whatever ends the run."""
        idle = self._limit_worker_idle()
        try:
            return await self._serve()
        finally:
            for problem in idle.restore():
                log.warning("workers.cpu_resume_latency_us: %s", problem)

    def _limit_worker_idle(self) -> CpuIdleLimit:
        """Apply ``workers.cpu_resume_latency_us`` to the workers' CPUs, and write back what a
        killed earlier run left limited (also when the limit is no longer configured)."""
        w = self.cfg.workers
        return cpuidle.for_daemon(w.cpus, w.idle_limit_us, cpuidle.state_file(self.cfg.engine.state_dir))

    async def _serve(self) -> int:
        import uvicorn

        from api.app import create_app

        cfg = self.cfg
        if cfg.workers.count and cfg.workers.cpus:
            keep_off_worker_cpus(set(cfg.workers.cpus))
        cfg.engine.state_dir.mkdir(parents=True, exist_ok=True)
        # The token first: a bad token file (ConfigError, exit 2) must stop the start before the
        # sync, the links and the workers are up, not leave an engine whose API answers only 401.
        if cfg.api.enabled:
            self.keyring.replace(api_tokens(cfg))
            log.info("API tokens by role: %s", self.keyring.describe())
            self.tls = tls.ServerTls.load(cfg.api) if cfg.api.tls else None
        source = self._source_factory(cfg.sync.source, cfg.sync.credentials())
        self.pipeline = pipeline = Pipeline(cfg, source)
        self.notifier.status("starting: stored table, first router fetch, engine links, packet workers")
        await pipeline.start()
        self.view = view = EngineView(
            fib=pipeline.fib,
            sync=SyncServiceView(pipeline.sync),
            workers=pipeline.workers,
            links=pipeline.links,
            version=__version__,
        )
        ha = view.ha = await self._start_ha(view)      # engine pairs (issue 16), None without [ha]
        server = None
        tasks: list[asyncio.Task[object]] = []
        loop = asyncio.get_running_loop()
        if cfg.api.enabled:
            if not ipaddress.ip_address(cfg.api.listen).is_loopback and self.tls is None:
                # only with api.allow_plaintext = true (api.config refuses it otherwise)
                log.warning(
                    "API listens on %s, beyond this host, WITHOUT TLS (api.allow_plaintext = true): "
                    "bearer tokens cross the network in clear text", cfg.api.listen,
                )
            app = create_app(view, self.keyring, diff_min_interval=cfg.api.diff_min_interval)
            server = uvicorn.Server(
                uvicorn.Config(
                    app,
                    host=cfg.api.listen,
                    port=cfg.api.port,
                    log_config=None,
                    lifespan="off",
                    access_log=False,
                    **(self.tls.uvicorn_options() if self.tls is not None else {}),
                )
            )
            # the supervisor owns SIGTERM/SIGINT/SIGHUP; uvicorn must not swap the handlers
            server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
            tasks.append(loop.create_task(server.serve()))
        tasks.append(loop.create_task(self._sample_rates(view)))
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
            loop.add_signal_handler(signal.SIGTERM, self._stop.set)
            loop.add_signal_handler(signal.SIGINT, self._stop.set)
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self.reload()))
        log.info(
            "xcast6-engine %s running: source %s, %d routes, %d workers, API %s",
            __version__,
            strip_secrets(cfg.sync.source),
            len(pipeline.fib),
            cfg.workers.count,
            cfg.api_url() if cfg.api.enabled else "disabled",
        )
        if server is not None:
            while not server.started and not tasks[0].done():
                await asyncio.sleep(0.02)
            if tasks[0].done():
                await pipeline.stop()
                exc = tasks[0].exception()
                raise SystemExit(
                    f"API could not start on {cfg.api.listen}:{cfg.api.port}: {exc or 'bind failed'}"
                )
        self.started.set()
        # -- systemd (Type=notify): READY once the table is loaded and the workers run ----------
        await self._wait_workers(view)
        self.notifier.send(READY=1, STATUS=self._status_line(view))
        tasks.append(loop.create_task(self._supervise_health(view)))
        # ------------------------------------------------------------------------------------------
        await self._stop.wait()
        self.notifier.send(STOPPING=1, STATUS="stopping: API, sync, workers, links")
        if ha is not None:
            await ha.drain()        # BFD down first: the router moves traffic while we still forward
        log.info("stopping: API, sync, workers, links")
        if server is not None:
            server.should_exit = True
        for t in tasks[1:]:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await pipeline.stop()
        if ha is not None:
            await ha.stop()
        log.info("stopped")
        return 0

    async def _start_ha(self, view: EngineView) -> HaController | None:
        """``[ha]``: the engine's bfdd, its sessions admin down until the engine is healthy."""
        cfg = self.cfg
        if not cfg.ha.enabled:
            return None
        peers = peers_for(cfg.ha, cfg.links.entries)
        ingress = list(cfg.workers.ingress) or [m.link for m in cfg.links.entries if m.link]
        ha = HaController(cfg.ha, peers, view, ingress, cfg.ha.bfd_dir or cfg.engine.state_dir / "bfd")
        try:
            await ha.start()
        except OSError:
            assert self.pipeline is not None
            await self.pipeline.stop()
            raise
        return ha

    async def reload(self) -> None:
        """SIGHUP: re-read the file; apply route-source settings; keep everything else running."""
        if self.cfg.path is None or self.pipeline is None:
            return
        try:
            new = load_config(self.cfg.path)
        except ConfigError as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)
            return
        try:
            source = self._source_factory(new.sync.source, new.sync.credentials())
        except (SourceError, ValueError) as exc:
            log.error("reload refused, keeping the running configuration: sync.source: %s", exc)
            return
        self.pipeline.reconfigure(source, new)
        self._reload_api_credentials(new)
        others = [s for s in ("engine", "links", "workers") if getattr(new, s) != getattr(self.cfg, s)]
        if tls.restart_fields(new.api) != tls.restart_fields(self.cfg.api):
            others.append("api")
        self.cfg = new
        log.info(
            "reloaded route-source settings: source %s, interval %g s",
            strip_secrets(new.sync.source),
            new.sync.interval,
        )
        if others:
            log.warning("changes in [%s] take effect at the next restart", ", ".join(others))

    def _reload_api_credentials(self, new: Config) -> None:
        """SIGHUP, issue 20: the API's tokens and its TLS certificate/key, each kept as it was
        when the new one cannot be used (the error names the file, never a token)."""
        if not self.cfg.api.enabled:
            return
        try:
            self.keyring.replace(api_tokens(new))
            log.info("reloaded API tokens by role: %s", self.keyring.describe())
        except ConfigError as exc:
            log.error("API tokens not reloaded, keeping the %d in use: %s", len(self.keyring), exc)
        if self.tls is not None and new.api.tls:
            try:
                self.tls.reload(new.api)
            except ConfigError as exc:
                log.error("API certificate not reloaded, keeping the one in use: %s", exc)

    # -- systemd health: STATUS= lines and the watchdog ---------------------------------------------
    async def _wait_workers(self, view: EngineView, timeout: float = 10.0) -> None:
        """Give the forked workers a moment to report running before READY=1 (bounded: an engine
        whose workers cannot start still reports ready, its STATUS= says why)."""
        deadline = time.monotonic() + timeout
        while not view.workers_running() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    @staticmethod
    def _status_line(view: EngineView) -> str:
        st = view.sync.status()
        ws = view.workers.workers()
        running = sum(1 for w in ws if w.state == "running")
        ready, why = view.ready()
        line = (f"{st.route_count} routes (generation {st.generation}), {running}/"
                f"{view.workers.configured()} workers, sync {st.state}")
        return line if ready else f"{line}; not ready: {'; '.join(why)}"

    @staticmethod
    def healthy(view: EngineView) -> tuple[bool, str]:
        """What the watchdog vouches for: the event loop turns (this runs on it) and, when workers
        are configured, at least one forwards.  A sync error is not unhealthy (the last good table
        keeps serving), nor is one worker being restarted; no worker at all for the whole
        WatchdogSec is, and systemd then restarts the engine."""
        configured = view.workers.configured()
        running = sum(1 for w in view.workers.workers() if w.state == "running")
        if configured and not running:
            return False, f"no packet worker running (0 of {configured})"
        return True, ""

    async def _supervise_health(self, view: EngineView) -> None:
        n = self.notifier
        every = min(5.0, n.watchdog_s / 3) if n.watchdog_s else 5.0
        was_healthy = True
        while True:
            ok, why = self.healthy(view)
            n.status(self._status_line(view))
            if ok and n.watchdog_s:
                n.send(WATCHDOG=1)
            if ok != was_healthy:
                if ok:
                    log.info("healthy again: watchdog pings resume")
                else:
                    log.warning("unhealthy: %s (watchdog pings stop; systemd restarts the engine "
                                "if this lasts WatchdogSec)", why)
                was_healthy = ok
            await asyncio.sleep(every)

    # ---------------------------------------------------------------------------------------------
    async def _sample_rates(self, view: EngineView, every: float = 5.0) -> None:
        while True:
            view.sample_rates()
            await asyncio.sleep(every)


def run(config_path: str | Path, log_format: str | None = None) -> int:
    """Entry point of ``xcast6-engine run``: returns the process exit status.  ``log_format``
    overrides ``engine.log_format`` (``run --json``: the start-up summary and every log line
    as JSON)."""
    from engine.tools import clikit

    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        clikit.fail(str(exc), clikit.EXIT_USAGE, as_json=log_format == "json")
        return clikit.EXIT_USAGE
    setup_logging(log_format or cfg.engine.log_format, cfg.engine.log_level)
    log.info("configuration %s: %s", config_path, json.dumps(cfg.summary()))
    try:
        return asyncio.run(Daemon(cfg).run())
    except (ConfigError, SourceError) as exc:
        log.error("%s", exc)
        return 2
    except (OSError, StoreError) as exc:
        # StoreError here is what a fresh store cannot fix (state_dir not creatable or writable);
        # a damaged store file is put aside by sync.store.open_store and does not end up here.
        log.error("start-up failed: %s", exc)
        return 1
    finally:
        logging.shutdown()
        time.sleep(0)
