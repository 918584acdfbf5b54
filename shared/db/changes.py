"""Server-record changes, told in-process once they commit: what lets a reader cache a record.

The gateway keeps what it read of a server record (status, runtime URL) instead
of reading it per request. Every write of a server record goes through
``lifecycle.transition`` (the status, the URL with it) or ``repo.update_server``
(the other fields); both call :func:`changed`, and watchers (:func:`watch`) hear
of it after the transaction commits, so a reader drops its copy the moment the
new row is visible and never re-reads the old one just before the commit. A
rolled-back change tells nobody.

This reaches only the process that wrote: another replica, or the operator in
its own process, is seen when the reader's copy expires (its TTL, the same bound
as the credential cache's).
"""

from __future__ import annotations

import threading
import uuid
import weakref
from typing import Protocol

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

_PENDING = "modelserve.changed_servers"


class Watcher(Protocol):
    def server_changed(self, server: uuid.UUID) -> None:
        """Called (on the committing thread) after ``server``'s record changed; must be cheap."""


# Weak: a gateway that is gone (tests build many) stops being told.
_watchers: weakref.WeakSet[Watcher] = weakref.WeakSet()
_lock = threading.Lock()  # pipeline steps commit on their own threads


def watch(watcher: Watcher) -> None:
    """Tell ``watcher`` of every committed server-record change in this process."""
    with _lock:
        _watchers.add(watcher)


def changed(session: AsyncSession, server: uuid.UUID) -> None:
    """Note that ``server``'s record changed in ``session``: watchers hear at its commit."""
    session.sync_session.info.setdefault(_PENDING, set()).add(server)


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    servers = session.info.pop(_PENDING, None)
    if not servers:
        return
    with _lock:
        watchers = list(_watchers)
    for server in servers:
        for watcher in watchers:
            watcher.server_changed(server)


@event.listens_for(Session, "after_rollback")
def _rolled_back(session: Session) -> None:
    session.info.pop(_PENDING, None)
