"""The links of this broker: one LinkRunner per link in the cluster metadata, and the
operations the HTTP API offers (create, list, describe, pause, resume, delete,
promote). Every broker runs every link, each for the mirrored partitions it leads;
changes go through the metadata document, so each broker sees them at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from broker.groups.offset_store import OffsetStore
from broker.leadership import Leadership
from broker.links import model, security
from broker.links.mirror import LinkRunner, MirrorSettings
from broker.log.manager import LogManager
from broker.metadata_store import MetadataStore

log = logging.getLogger(__name__)

RECONCILE_S = 1.0


class UnknownLink(KeyError):
    pass


class LinkService:
    def __init__(
        self,
        meta: MetadataStore,
        logs: LogManager,
        leadership: Leadership,
        offsets: OffsetStore,
        group_active: Callable[[str], bool],
        settings: MirrorSettings | None = None,
    ) -> None:
        self.meta = meta
        self.logs = logs
        self.leadership = leadership
        self.offsets = offsets
        self.group_active = group_active
        self.settings = settings or MirrorSettings()
        self.runners: dict[str, LinkRunner] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._reconcile_forever(), name="links")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for runner in list(self.runners.values()):
            await runner.stop()
        self.runners.clear()

    async def _reconcile_forever(self) -> None:
        while True:
            try:
                await self.reconcile()
            except Exception:
                log.exception("links: reconcile failed")
            await asyncio.sleep(RECONCILE_S)

    async def reconcile(self) -> None:
        """A runner for each link in the metadata (another broker may have added it)."""
        for name in list(self.runners):
            if name not in self.meta.links:
                await self.runners.pop(name).stop()
                log.info("link %s deleted", name)
        for name, link in self.meta.links.items():
            running = self.runners.get(name)
            if running is not None and (
                running.source_bootstrap != link["source_bootstrap"]
                or running.source_security != link.get("source_security", {})
            ):
                await self.runners.pop(name).stop()
                running = None
            if running is None:
                source_security = dict(link.get("source_security", {}))
                try:  # reads the TLS files: off the event loop
                    client = await asyncio.to_thread(security.peer_security, source_security)
                except (OSError, ValueError) as e:
                    log.warning("link %s: source security settings unusable: %s", name, e)
                    continue
                runner = LinkRunner(
                    name,
                    self.meta,
                    self.logs,
                    self.leadership,
                    self.offsets,
                    self.group_active,
                    self.settings,
                    source_security,
                    client,
                )
                self.runners[name] = runner
                runner.start()

    # --- the API's operations ---------------------------------------------------------

    async def create(
        self,
        name: str,
        source_bootstrap: str,
        topics: str,
        groups: str,
        source_security: dict[str, str] | None = None,
        on_source_gap: str = model.GAP_STOP,
    ) -> dict:
        settings = security.checked(source_security or {})
        try:  # the TLS files load: refused now, not later in the runner
            await asyncio.to_thread(security.peer_security, settings)
        except (OSError, ValueError) as e:
            raise model.LinkError(f"source security: {e}") from None
        link = model.new_link(
            name,
            source_bootstrap,
            topics,
            groups,
            int(time.time() * 1000),
            settings,
            on_source_gap,
        )

        def add() -> None:
            if name in self.meta.links:
                raise model.LinkError(f"link {name!r} exists")
            self.meta.links[name] = link

        await self.meta.update(add)
        log.info("link %s created: %s from %s", name, topics, source_bootstrap)
        await self.reconcile()
        return self.describe(name)

    def list(self) -> list[dict]:
        out = []
        for name in sorted(self.meta.links):
            d = self.describe(name)
            out.append(
                {
                    "name": name,
                    "state": d["state"],
                    "source_bootstrap": d["source_bootstrap"],
                    "topics": len(d["topics"]),
                    "connected": d["connected"],
                    "last_error": d["last_error"],
                }
            )
        return out

    def describe(self, name: str) -> dict:
        if name not in self.meta.links:
            raise UnknownLink(name)
        runner = self.runners.get(name)
        if runner is not None:
            return runner.describe()
        link = self.meta.links[name]
        return {
            "name": name,
            "state": link["state"],
            "source_bootstrap": link["source_bootstrap"],
            "source_security": security.redacted(link.get("source_security", {})),
            "connected": False,
            "last_error": None,
            "topics": dict(link["mirrors"]),
        }

    async def set_state(self, name: str, state: str, accept_gaps: bool = False) -> dict:
        """Pause or resume; `accept_gaps`: partitions stopped at a gap the source lost
        so far go on from the source's start (the gap stays a gap in the mirror)."""

        def change() -> None:
            if name not in self.meta.links:
                raise UnknownLink(name)
            self.meta.links[name]["state"] = state
            if accept_gaps:
                self.meta.links[name]["gaps_accepted_ms"] = int(time.time() * 1000)

        await self.meta.update(change)
        log.info("link %s %s", name, state)
        return self.describe(name)

    async def delete(self, name: str) -> None:
        """Stop the link; its topics not promoted become ordinary, writable topics
        (their records and offsets stay)."""

        def change() -> None:
            if name not in self.meta.links:
                raise UnknownLink(name)
            del self.meta.links[name]

        await self.meta.update(change)
        await self.reconcile()

    async def promote(self, name: str, topic: str, timeout_s: float) -> dict:
        """Cut `topic` over: the mirror catches up to the source's end (stop the
        producers on the source first), the groups' offsets are synced a last time,
        mirroring stops and the topic takes writes. Waits up to `timeout_s`; the
        answer's state says whether it is done ("promoted") or still catching up."""

        def change() -> None:
            link = self.meta.links.get(name)
            if link is None:
                raise UnknownLink(name)
            mirror = link["mirrors"].get(topic)
            if mirror is None:
                raise model.LinkError(f"link {name!r} does not mirror topic {topic!r}")
            if link["state"] != model.ACTIVE and mirror["state"] != model.PROMOTED:
                raise model.LinkError(f"link {name!r} is paused: resume it to promote")
            if mirror["state"] == model.MIRRORING:
                mirror["state"] = model.PROMOTING
                mirror["promote_requested_ms"] = int(time.time() * 1000)

        await self.meta.update(change)
        runner = self.runners.get(name)
        if runner is not None:
            runner.request_promotion(topic)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            mirror = self.meta.links.get(name, {}).get("mirrors", {}).get(topic, {})
            if mirror.get("state") == model.PROMOTED:
                break
            await asyncio.sleep(0.2)
        return self.describe(name)["topics"].get(topic, {})
