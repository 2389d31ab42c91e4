"""Exclusive claims on outputs, so that two runs never write the same file.

Before a run writes an output it creates a small *claim file* next to it,
``.<output name>.claim``, exclusively: it is written under a unique name and
hard-linked to the claim name, which fails when the name exists (``link`` and
``O_EXCL`` creation are atomic on local disks and on NFS/Lustre alike; no ``fcntl``
lock is involved, those do not work reliably across cluster nodes). The claim holds
the host name, process id, start time and a random token; it is removed when the
output is finished or abandoned.

A second run that finds a claim is refused with a message naming the holder (or, with
``--skip-existing``, skips that input), unless the claim is **stale**:

- written on this machine (same boot and process namespace) by a process that no
  longer exists (or whose pid now belongs to another process): a run killed with
  ``kill -9`` or by the out-of-memory killer is recognised at once;
- written on another machine (whose processes cannot be checked) and not refreshed
  for :data:`STALE_AFTER_S` seconds: every running holder touches its claims every
  :data:`HEARTBEAT_S` seconds from a background thread, so only a dead run's claim
  ages. The age is measured against the file server's clock (the modification time of
  a file written just before), so clock skew between nodes does not matter.

Breaking a stale claim is itself serialised by an exclusive ``.break`` file, so two
runs that find the same stale claim cannot both take it. The new holder then removes
the temporary files the dead run left (their names carry the old claim's token).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from convpaint.errors import OutputBusyError, OutputError

__all__ = [
    "HEARTBEAT_S",
    "STALE_AFTER_S",
    "Claim",
    "ClaimInfo",
    "acquire",
    "claim_path",
    "held_token",
    "read_claim",
]

logger = logging.getLogger(__name__)

#: Seconds between refreshes of a held claim's modification time.
HEARTBEAT_S = 60.0
#: A claim from another machine not refreshed for this long belongs to a dead run.
#: ``CONVPAINT_STALE_CLAIM_S`` overrides it (e.g. for a file system with coarse times).
STALE_AFTER_S = 600.0
#: A ``.break`` file older than this was left by a run killed while breaking a claim.
_BREAK_STALE_S = 60.0
#: Largest claim file read (they are a few hundred bytes).
_MAX_CLAIM_BYTES = 64 * 1024


def claim_path(output: Path | str) -> Path:
    """The claim file of an output: ``.<name>.claim`` in the output's folder."""
    output = Path(output)
    return output.with_name(f".{output.name}.claim")


def _stale_after() -> float:
    value = os.environ.get("CONVPAINT_STALE_CLAIM_S")
    try:
        return float(value) if value else STALE_AFTER_S
    except ValueError:
        return STALE_AFTER_S


def _machine_id() -> str:
    """This kernel boot and process namespace: where a pid means the same process."""
    parts = []
    try:
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    except OSError:
        parts.append(socket.gethostname())
    return ":".join(parts)


def _proc_stat(pid: int) -> list[str] | None:
    """Fields 3 onwards of ``/proc/<pid>/stat`` (state first), None when unavailable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after it
    return stat.rsplit(")", 1)[-1].split()


def _process_start(pid: int) -> str | None:
    """The start time of a process (clock ticks since boot), to detect pid reuse."""
    fields = _proc_stat(pid)
    return fields[19] if fields is not None and len(fields) > 19 else None


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    except OSError:
        return True
    fields = _proc_stat(pid)
    if fields is None:  # no /proc: trust the pid
        return True
    if fields[0] in ("Z", "X"):  # killed, not yet reaped by its parent
        return False
    return start is None or len(fields) <= 19 or fields[19] == start


@dataclass(frozen=True)
class ClaimInfo:
    """What a claim file says about its holder."""

    path: Path
    host: str
    pid: int
    started: str
    token: str
    machine: str
    pid_start: str | None
    mtime: float

    def describe(self) -> str:
        """``host H, pid P, since T`` for messages."""
        return f"host {self.host}, pid {self.pid}, since {self.started}"


def read_claim(path: Path) -> ClaimInfo | None:
    """Read a claim file; None when it vanished. Unreadable content gives a claim
    with empty fields (judged by its age only)."""
    try:
        st = path.stat()
        raw = (
            path.read_bytes()[:_MAX_CLAIM_BYTES]
            if st.st_size <= _MAX_CLAIM_BYTES
            else b""
        )
    except FileNotFoundError:
        return None
    except OSError as err:
        raise OutputError(f"cannot read the claim file '{path}': {err}") from err
    try:
        data: dict[str, Any] = json.loads(raw.decode("utf-8"))
        if not isinstance(data, dict):
            raise ValueError
    except ValueError:
        data = {}
    return ClaimInfo(
        path=path,
        host=str(data.get("host", "?")),
        pid=int(data["pid"]) if isinstance(data.get("pid"), int) else -1,
        started=str(data.get("started", "?")),
        token=str(data.get("token", "")),
        machine=str(data.get("machine", "")),
        pid_start=data.get("pid_start")
        if isinstance(data.get("pid_start"), str)
        else None,
        mtime=st.st_mtime,
    )


def _is_stale(info: ClaimInfo, server_now: float) -> bool:
    if info.pid > 0 and info.machine and info.machine == _machine_id():
        return not _alive(info.pid, info.pid_start)
    return server_now - info.mtime > _stale_after()


class _Heartbeat:
    """One daemon thread per process that refreshes every held claim's mtime."""

    def __init__(self) -> None:
        self._held: dict[Path, Claim] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    def add(self, claim: Claim) -> None:
        with self._lock:
            self._held[claim.output] = claim
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="convpaint-claims", daemon=True
                )
                self._thread.start()

    def remove(self, claim: Claim) -> None:
        with self._lock:
            if self._held.get(claim.output) is claim:
                del self._held[claim.output]

    def token(self, output: Path) -> str | None:
        with self._lock:
            claim = self._held.get(output)
            return claim.token if claim is not None else None

    def _run(self) -> None:
        while True:
            self._wake.wait(HEARTBEAT_S)
            with self._lock:
                claims = list(self._held.values())
            for claim in claims:
                claim.refresh()


_HEARTBEAT = _Heartbeat()


def held_token(output: Path | str) -> str | None:
    """The token of this process's claim on ``output`` (None when not held)."""
    return _HEARTBEAT.token(Path(output))


class Claim:
    """A held claim on one output; release it with :meth:`release` (or ``with``)."""

    def __init__(self, output: Path, path: Path, token: str) -> None:
        self.output = output
        self.path = path
        self.token = token

    def refresh(self) -> None:
        """Touch the claim file so that other machines see the holder is alive."""
        try:
            os.utime(self.path)
        except OSError as err:
            logger.warning("could not refresh the claim '%s': %s", self.path, err)

    def release(self) -> None:
        """Remove the claim file if it is still ours."""
        _HEARTBEAT.remove(self)
        info = read_claim(self.path)
        if info is not None and info.token == self.token:
            self.path.unlink(missing_ok=True)
        elif info is not None:
            logger.warning(
                "the claim '%s' was taken over by %s while this run held it",
                self.path,
                info.describe(),
            )

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _content(token: str) -> bytes:
    pid = os.getpid()
    return json.dumps(
        {
            "convpaint": "output claim",
            "host": socket.gethostname(),
            "pid": pid,
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "token": token,
            "machine": _machine_id(),
            "pid_start": _process_start(pid),
        }
    ).encode()


def _create_exclusive(path: Path, data: bytes) -> tuple[bool, float]:
    """Create ``path`` holding ``data`` unless it exists.

    Returns whether it was created, and the file server's current time (the
    modification time of the scratch file just written). The data is written to a
    unique scratch file first and hard-linked to ``path``, so a claim never exists
    half-written; file systems without hard links get an ``O_EXCL`` create.
    """
    scratch = path.with_name(f"{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        scratch.write_bytes(data)
        server_now = scratch.stat().st_mtime
        try:
            os.link(scratch, path)
            return True, server_now
        except FileExistsError:
            return False, server_now
        except OSError:  # no hard links here (some FUSE/SMB mounts)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False, server_now
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            return True, server_now
    finally:
        scratch.unlink(missing_ok=True)


def _break_stale(path: Path, seen: ClaimInfo) -> bool:
    """Remove the stale claim ``seen`` unless another run is already doing so."""
    lock = path.with_name(path.name + ".break")
    created, server_now = _create_exclusive(lock, b"")
    if not created:
        held = read_claim(lock)
        if held is not None and server_now - held.mtime > _BREAK_STALE_S:
            lock.unlink(missing_ok=True)  # left by a run killed while breaking
        return False
    try:
        now = read_claim(path)
        if now is not None and now.token == seen.token:
            logger.warning("removing the stale claim %s (%s)", path, seen.describe())
            path.unlink(missing_ok=True)
            return True
        return False
    finally:
        lock.unlink(missing_ok=True)


def acquire(output: Path | str) -> tuple[Claim, ClaimInfo | None]:
    """Claim ``output`` for this process.

    Returns the claim and, when a stale claim of a dead run was broken, what it said
    (the caller removes that run's temporary files, see
    :func:`convpaint.io.atomic.partial_paths`).

    Raises
    ------
    OutputBusyError
        Another live run holds the claim (the message names its host and pid).
    OutputError
        The claim cannot be written (permissions, full disk, not a folder ...).
    """
    from .atomic import describe_os_error

    output = Path(output)
    path = claim_path(output)
    token = uuid.uuid4().hex[:12]
    data = _content(token)
    broken: ClaimInfo | None = None
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(8):
            if attempt:
                time.sleep(0.05 * attempt)  # another run is on it: let it finish
            created, server_now = _create_exclusive(path, data)
            if created:
                claim = Claim(output, path, token)
                _HEARTBEAT.add(claim)
                return claim, broken
            seen = read_claim(path)
            if seen is None:
                continue  # released meanwhile: try again
            if _is_stale(seen, server_now):
                if _break_stale(path, seen):
                    broken = seen
                continue
            raise OutputBusyError(
                f"output '{output}' is being written by another run ({seen.describe()}; "
                f"claim file '{path}'); wait for it to finish, or give the runs "
                "different outputs or shards. If that run is dead and the claim stays, "
                f"delete the claim file (claims of dead runs on other machines expire "
                f"after {_stale_after() / 60:.0f} min without refresh)"
            )
        raise OutputBusyError(
            f"output '{output}' could not be claimed: its claim file '{path}' keeps "
            "changing; another run is starting on it"
        )
    except OSError as err:
        # the failing path is usually a scratch file of ours: name the folder instead
        folder = output.parent
        inside = err.filename is not None and Path(str(err.filename)).parent == folder
        raise OutputError(
            f"cannot write in the output folder '{folder}' (to claim "
            f"'{output.name}'): {describe_os_error(err, where=folder if inside else None)}"
        ) from err
