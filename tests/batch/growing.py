"""The source plugin several batch tests load: a CSV file that only grows, read from the
byte offset loaded so far (the cursor), up to its last complete line."""

from __future__ import annotations

_PLUGIN = """
import io, os
import pandas as pd
from plugins.base import Payload, SourcePlugin
from plugins.exceptions import FetchError

class Growing(SourcePlugin):
    '''A CSV file that only grows; the cursor is the byte offset loaded so far. While
    the file named by the option ``unreachable`` exists, the next fetch deletes it and
    fails as a source that is down does.'''

    def fetch(self, cursor):
        flag = self.options.get("unreachable")
        if flag and os.path.exists(flag):
            os.unlink(flag)
            raise FetchError("the source answered 503")
        offset = int(cursor or 0)
        with open(self.options["path"], "rb") as fh:
            fh.seek(offset)
            data = fh.read()
        end = data.rfind(b"\\n") + 1
        if end:
            yield Payload(content=data[:end], media_type="text/csv", meta={"end": offset + end})

    def ingest(self, payload):
        frame = pd.read_csv(io.BytesIO(payload.content), header=None, names=NAMES, DTYPE)
        INGEST
        return frame

    def next_cursor(self, cursor, payloads):
        return payloads[-1].meta["end"] if payloads else cursor
"""


def growing_plugin(names: list[str], ingest: str = "pass", *, as_text: bool = False) -> str:
    """The plugin's source code: CSV columns ``names``, then the line of ``ingest`` code
    that cleans ``frame``; ``as_text`` reads every column as text (the load types it)."""
    return (
        _PLUGIN.replace("NAMES", repr(names))
        .replace("DTYPE", "dtype=str" if as_text else "dtype=None")
        .replace("INGEST", ingest)
    )
