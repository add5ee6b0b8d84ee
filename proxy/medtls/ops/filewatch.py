"""Notice renewed certificate/key/CA/config files: a change counts once the files have stayed
the same for one check interval (renewal tools write the key and the certificate one after the
other; reloading in between would load a mismatched pair)."""

from __future__ import annotations

import os
from collections.abc import Callable

Stamp = tuple[int, int, int] | None


def stamp(path: str) -> Stamp:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class FileWatcher:
    def __init__(self, paths: Callable[[], list[str]], stat: Callable[[str], Stamp] = stamp):
        self._paths = paths
        self._stat = stat
        self.baseline = self._stamps()
        self._pending: dict[str, Stamp] | None = None

    def _stamps(self) -> dict[str, Stamp]:
        return {path: self._stat(path) for path in self._paths()}

    def rebase(self) -> None:
        """After a reload (ok or failed): the current files are the new reference."""
        self.baseline = self._stamps()
        self._pending = None

    def check(self) -> list[str]:
        """Paths that changed and have settled since the last check; [] otherwise."""
        current = self._stamps()
        if current == self.baseline:
            self._pending = None
            return []
        if current != self._pending:
            self._pending = current
            return []
        changed = [p for p in current if current[p] != self.baseline.get(p)]
        self.baseline, self._pending = current, None
        return changed
