"""Output collection shared by local and remote runs.

A :class:`StreamCollector` receives raw byte chunks, decodes them as UTF-8
(invalid bytes replaced, multi-byte characters split across chunks kept
whole), keeps the whole text and tees complete lines to a logger or a file
object as they arrive.
"""

from __future__ import annotations

import codecs
import logging
from typing import IO, Any


class _TeeToLogs:
    def __repr__(self) -> str:
        return "TEE_TO_LOGS"


#: Default ``stdout_tee``/``stderr_tee``: stream lines to the host's logger.
TEE_TO_LOGS: Any = _TeeToLogs()


class StreamCollector:
    """Accumulates one output stream and tees it line by line."""

    def __init__(
        self,
        tee: IO[str] | Any | None,
        logger: logging.Logger | None = None,
        level: int = logging.DEBUG,
        prefix: str = "",
    ) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._parts: list[str] = []
        self._pending = ""
        self._tee = tee
        self._logger = logger
        self._level = level
        self._prefix = prefix

    def feed(self, data: bytes) -> None:
        text = self._decoder.decode(data)
        if text:
            self._parts.append(text)
            self._emit(text)

    def finish(self) -> str:
        """Flush the decoder and any partial last line; return the whole text."""
        text = self._decoder.decode(b"", final=True)
        if text:
            self._parts.append(text)
            self._emit(text)
        if self._pending:
            self._emit_line(self._pending)
            self._pending = ""
        return "".join(self._parts)

    def _emit(self, text: str) -> None:
        if self._tee is None:
            return
        if self._tee is not TEE_TO_LOGS:
            self._tee.write(text)
            flush = getattr(self._tee, "flush", None)
            if flush is not None:
                flush()
            return
        data = self._pending + text
        *lines, self._pending = data.split("\n")
        for line in lines:
            self._emit_line(line)

    def _emit_line(self, line: str) -> None:
        if self._tee is TEE_TO_LOGS and self._logger is not None:
            self._logger.log(self._level, "%s%s", self._prefix, line)
