"""The broker's HTTP listener: the metrics registry, /healthz and /readyz, and the apps
given to it (the replay API under /v1/; the web console for every other path), served
from a thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.core import Metric

from broker.metrics.counters import BrokerMetrics

log = logging.getLogger(__name__)

SCRAPE_STATE_TIMEOUT = 5.0  # seconds a scrape waits for the event loop


# a WSGI app that also gets a way to run coroutines on the broker's event loop
LoopApp = Callable[[dict, Callable, Callable[[Callable[[], Awaitable[Any]], float], Any]], Any]


class MetricsHttp:
    def __init__(
        self,
        metrics: BrokerMetrics,
        apps: Mapping[str, LoopApp] | None = None,
        fallback: LoopApp | None = None,
    ) -> None:
        """Serves `metrics.registry`; /readyz answers `metrics.ready`; `apps[prefix]`
        answers the paths under that prefix, and `fallback` (the console) any other."""
        self.metrics = metrics
        self.apps = dict(apps or {})
        self.fallback = fallback
        self._loop: asyncio.AbstractEventLoop | None = None
        self._httpd: WSGIServer | None = None
        self._metrics_app = make_wsgi_app(metrics.registry)

    def start(self, listen: str) -> int | None:
        """Serve /metrics, /healthz and /readyz on a daemon thread; returns the port."""
        self._loop = asyncio.get_running_loop()
        if not listen:
            return None
        host, port = listen.rsplit(":", 1)
        host = host.strip("[]") or "0.0.0.0"

        class Server(_ThreadingWSGIServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        self._httpd = make_server(host, int(port), self._app, Server, _QuietHandler)
        threading.Thread(target=self._httpd.serve_forever, name="metrics-http", daemon=True).start()
        bound = self._httpd.server_port
        log.info(
            "HTTP on http://%s:%d: /metrics, /healthz, /readyz%s",
            host,
            bound,
            "".join(f", {prefix}" for prefix in self.apps)
            + (", the console at /" if self.fallback is not None else ""),
        )
        return bound

    async def stop(self) -> None:
        self.metrics.ready = False
        if self._httpd is not None:
            httpd, self._httpd = self._httpd, None
            await asyncio.to_thread(httpd.shutdown)
            httpd.server_close()

    def _app(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        for prefix, app in self.apps.items():
            if path.startswith(prefix):
                return app(environ, start_response, self.run_on_loop)
        if path == "/metrics":
            return self._metrics_app(environ, start_response)
        if path == "/healthz":
            status, text = "200 OK", b"ok\n"
        elif path == "/readyz":
            status, text = (
                ("200 OK", b"ready\n")
                if self.metrics.ready
                else ("503 Service Unavailable", b"not ready\n")
            )
        elif self.fallback is not None:
            return self.fallback(environ, start_response, self.run_on_loop)
        else:
            status, text = "404 Not Found", b"try /metrics, /healthz or /readyz\n"
        start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
        return [text]

    def run_on_loop(self, make: Callable[[], Awaitable[Any]], timeout: float) -> Any:
        """Run the coroutine `make()` on the event loop from the HTTP thread; its result,
        or its exception (TimeoutError after `timeout` seconds)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            raise RuntimeError("the broker is not running")

        async def call() -> Any:
            return await make()

        fut = asyncio.run_coroutine_threadsafe(call(), loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise TimeoutError(f"no answer within {timeout}s") from None

    def on_loop(self, fn: Callable[[], list[Metric]]) -> list[Metric]:
        """Run `fn` on the event loop (the broker's dicts change only there) and wait."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return []
        try:
            if asyncio.get_running_loop() is loop:
                return fn()
        except RuntimeError:
            pass  # no loop in this thread: the usual case, a scrape on the HTTP thread
        fut: concurrent.futures.Future[list[Metric]] = concurrent.futures.Future()

        def run() -> None:
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn())
                except BaseException as e:
                    fut.set_exception(e)

        try:
            loop.call_soon_threadsafe(run)
            return fut.result(SCRAPE_STATE_TIMEOUT)
        except RuntimeError:
            return []  # the loop closed under us: shutting down
        except concurrent.futures.TimeoutError:
            fut.cancel()
            log.warning("scrape: the event loop did not answer in %ss", SCRAPE_STATE_TIMEOUT)
            return []


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass
