"""The WAL on its own: group commit, replay, and cutting torn or corrupt tails."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import pytest

from tests.wire import make_batch
from wal import WriteAheadLog
from wal.segment import list_segments, segment_path

TOPIC = b"\x01" * 16


def _replay(directory: Path, segment_bytes: int = 1 << 20) -> tuple[WriteAheadLog, list]:
    wal = WriteAheadLog(directory, segment_bytes)
    seen: list = []
    wal.recover(lambda e: seen.append((e.partition, e.base_offset, bytes(e.batch))))
    return wal, seen


async def _write(
    directory: Path, batches: list[bytes], segment_bytes: int = 1 << 20
) -> WriteAheadLog:
    wal, _ = _replay(directory, segment_bytes)
    wal.start()
    ends = [wal.append(TOPIC, i % 3, 0, i, b)[1] for i, b in enumerate(batches)]
    await wal.wait_durable(ends[-1])
    await wal.close()
    return wal


def test_appends_replay_in_order_across_segments(tmp_path: Path) -> None:
    batches = [make_batch([b"v%d" % i * 50]) for i in range(200)]
    wal = asyncio.run(_write(tmp_path, batches, segment_bytes=4096))
    assert len(list_segments(tmp_path)) > 3
    assert wal.syncs < len(batches), "appends queued together should share a sync"
    _, seen = _replay(tmp_path, 4096)
    assert [b for _, _, b in seen] == batches
    assert [o for _, o, _ in seen] == list(range(200))


def test_torn_tail_is_cut_and_appends_continue(tmp_path: Path) -> None:
    batches = [make_batch([b"value-%d" % i]) for i in range(10)]
    asyncio.run(_write(tmp_path, batches))
    seg = segment_path(tmp_path, 0)
    good_size = seg.stat().st_size
    with open(seg, "ab") as f:  # half of an entry, as a crash mid-write leaves it
        f.write(os.urandom(7) + b"\x00" * 30)
    _, seen = _replay(tmp_path)
    assert [b for _, _, b in seen] == batches
    assert seg.stat().st_size == good_size, "the torn tail should be truncated away"

    after = make_batch([b"after"])
    asyncio.run(_write(tmp_path, [after]))
    _, seen = _replay(tmp_path)
    assert [b for _, _, b in seen] == [*batches, after]


def test_corrupt_entry_ends_the_valid_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    batches = [make_batch([b"value-%d" % i]) for i in range(10)]
    asyncio.run(_write(tmp_path, batches))
    seg = segment_path(tmp_path, 0)
    data = bytearray(seg.read_bytes())
    entry = len(data) // 10
    data[entry * 6 + 50] ^= 0xFF  # flip a byte inside the 7th entry
    seg.write_bytes(bytes(data))
    _, seen = _replay(tmp_path)
    assert [b for _, _, b in seen] == batches[:6]
    assert "invalid entry" in caplog.text


def test_reads_return_synced_bytes(tmp_path: Path) -> None:
    async def run() -> None:
        wal, _ = _replay(tmp_path)
        wal.start()
        b1, b2 = make_batch([b"one"]), make_batch([b"two" * 100])
        p1, _ = wal.append(TOPIC, 0, 0, 0, b1)
        p2, end = wal.append(TOPIC, 0, 0, 1, b2)
        await wal.wait_durable(end)
        assert await wal.read([(p2, len(b2)), (p1, len(b1))]) == [b2, b1]
        await wal.close()

    asyncio.run(run())


def test_rolling_segments_under_sustained_appends(tmp_path: Path) -> None:
    """Segments roll hundreds of times while the syncer runs: every append becomes
    durable and replays, none is lost (the syncer and the writer share descriptors)."""

    async def run() -> int:
        wal, _ = _replay(tmp_path, 1024)
        wal.start()
        pending = []
        for i in range(3000):
            _, end = wal.append(TOPIC, 0, 0, i, make_batch([b"%06d" % i * 20]))
            pending.append(wal.wait_durable(end))
            if i % 5 == 0:
                await asyncio.sleep(0)  # let the writer and syncer run between bursts
        await asyncio.gather(*pending)
        await wal.close()
        return len(list_segments(tmp_path))

    segments = asyncio.run(run())
    assert segments > 300
    _, seen = _replay(tmp_path, 1024)
    assert [o for _, o, _ in seen] == list(range(3000))


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 1 MiB tmpfs (root only), unmounted at teardown."""
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_refuses_appends_and_writes_what_it_kept_when_room_returns(
    small_disk: Path,
) -> None:
    """Found by the chaos harness: ENOSPC made the WAL refuse appends until a restart.
    While the disk is full, appends are refused (WalFull, a retriable storage error)
    and what was queued is kept; once there is room it is written, synced, and
    replays with nothing lost, torn or reordered."""
    from wal import WalFull

    directory = small_disk / "wal"
    before = [make_batch([b"before-%d" % i]) for i in range(5)]
    queued = [make_batch([b"queued-%d" % i * 40]) for i in range(20)]
    after = make_batch([b"after"])

    async def scenario() -> None:
        wal, _ = _replay(directory)
        wal.start()
        ends = [wal.append(TOPIC, 0, 0, i, b)[1] for i, b in enumerate(before)]
        await wal.wait_durable(ends[-1])
        filler = small_disk / "filler"
        # every byte left, then some: ENOSPC is the point
        with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 4096)
        ends = [wal.append(TOPIC, 0, 0, 5 + i, b)[1] for i, b in enumerate(queued)]
        durable = asyncio.ensure_future(wal.wait_durable(ends[-1]))
        for _ in range(200):
            await asyncio.sleep(0.05)
            if wal.full_stalls:
                break
        assert wal.full_stalls == 1 and not durable.done()
        with pytest.raises(WalFull):
            wal.append(TOPIC, 0, 0, 99, after)
        filler.unlink()
        await asyncio.wait_for(durable, 10)
        end = wal.append(TOPIC, 0, 0, 5 + len(queued), after)[1]
        await wal.wait_durable(end)
        await wal.close()

    asyncio.run(scenario())
    _, seen = _replay(directory)
    assert [b for _, _, b in seen] == [*before, *queued, after]
    assert [o for _, o, _ in seen] == list(range(len(before) + len(queued) + 1))
