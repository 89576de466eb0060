"""The in-memory store passes the store contract."""

from __future__ import annotations

from pathlib import Path

from vchat.store.interface import IStore
from vchat.store.memory import MemoryStore
from vchat.store.testing import StoreContract


class TestMemoryStore(StoreContract):
    async def open_store(self, directory: Path) -> IStore:
        return MemoryStore()
