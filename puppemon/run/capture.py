"""A run's log as it is kept: the head and the tail in bounded memory, redacted when rendered."""
from __future__ import annotations

import os
import re
import struct
from typing import Callable

from puppemon.secrets import needles, redact


class Log:
    """Keeps the first limit/2 bytes and a ring of the last limit/2, so memory stays
    bounded however much the flow prints."""

    def __init__(self, limit: int, on_output: Callable[[bytes], None] | None) -> None:
        self.head_cap = max(limit, 0) // 2
        self.tail_cap = max(limit, 0) - self.head_cap
        self.head = bytearray()
        self.ring = bytearray(self.tail_cap)
        self.pos = 0
        self.filled = 0
        self.total = 0
        self.ends_with_newline = True
        self.on_output = on_output

    def write(self, data: bytes) -> None:
        if not data:
            return
        if self.on_output is not None:
            self.on_output(data)
        self.total += len(data)
        self.ends_with_newline = data.endswith(b"\n")
        room = self.head_cap - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if not data or not self.tail_cap:
            return
        view = memoryview(data)[-self.tail_cap:]
        n = len(view)
        first = min(n, self.tail_cap - self.pos)
        self.ring[self.pos:self.pos + first] = view[:first]
        self.ring[:n - first] = view[first:]
        self.pos = (self.pos + n) % self.tail_cap
        self.filled = min(self.tail_cap, self.filled + n)

    def line(self, text: str) -> None:
        """Write a line of puppemon's own, starting on a fresh line."""
        self.write((b"" if self.ends_with_newline else b"\n") + text.encode() + b"\n")

    def render(self, secrets: dict) -> bytes:
        """The log as kept, redacted, with a note where the middle was cut."""
        ring = memoryview(self.ring)
        if self.filled < self.tail_cap:
            tail = bytes(ring[:self.filled])
        else:
            tail = b"".join((ring[self.pos:], ring[:self.pos]))
        ring.release()
        self.ring = bytearray()  # render once: give the memory back before building the result
        head, self.head = bytes(self.head), bytearray()
        cut = self.total - len(head) - len(tail)
        if cut == 0:
            return redact(head + tail, secrets)
        # A secret may straddle the cut: the head can end with its first bytes and the
        # tail start with its last ones, which no pattern matches. Drop one secret's
        # length (minus one) on each side of the cut, after redacting what is whole.
        margin = max((len(n.encode()) for n in needles(secrets)), default=1) - 1
        head, tail = redact(head, secrets), redact(tail, secrets)
        cut += 2 * margin
        note = f"\n[... puppemon: {cut} bytes cut from the middle of this log ...]\n".encode()
        return b"".join((memoryview(head)[:len(head) - margin], note, memoryview(tail)[margin:]))


class Redactor:
    """Redacts a stream piece by piece exactly as `redact` would the whole of it: what could be
    the start of a secret is held back until the next piece shows whether it is one."""

    def __init__(self, secrets: dict) -> None:
        found = needles(secrets)
        self.needles = [n.encode() for n in found]
        self.pattern = re.compile(b"|".join(map(re.escape, self.needles))) if found else None
        self.keep = max(map(len, self.needles)) - 1 if found else 0
        self.firsts = {n[0] for n in self.needles}
        self.pending = b""

    def feed(self, data: bytes) -> bytes:
        """The redacted text that `data` completes (maybe empty; the rest comes with later pieces)."""
        if self.pattern is None:
            return data
        buf = self.pending + data
        # Held back: from the first place where what follows could be the start of a secret. A match
        # that starts before it is whole in `buf`, and no longer one could start there, so it is the
        # match a scan of the whole stream finds.
        cut = next((q for q in range(max(0, len(buf) - self.keep), len(buf))
                    if buf[q] in self.firsts and any(n.startswith(buf[q:]) for n in self.needles)), len(buf))
        out, at = [], 0
        for match in self.pattern.finditer(buf):
            if match.start() >= cut:
                break
            out += (buf[at:match.start()], b"***")
            at = match.end()
        end = max(cut, at)
        out.append(buf[at:end])
        self.pending = buf[end:]
        return b"".join(out)


class Spool:
    """A run's output kept in a file as it comes, bounded like Log (the head, then a ring of the
    tail), so what a run printed outlives a daemon killed while it ran (`read_spool`)."""

    def __init__(self, path, limit: int) -> None:
        self.head_cap = max(limit, 0) // 2
        self.tail_cap = max(limit, 0) - self.head_cap
        self.total = 0
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self._header()

    def _header(self) -> None:
        os.pwrite(self.fd, _HEADER.pack(_MAGIC, self.head_cap, self.tail_cap, self.total), 0)

    def write(self, data: bytes) -> None:
        head = min(self.total, self.head_cap)
        room = self.head_cap - head
        if room > 0:
            os.pwrite(self.fd, data[:room], _HEADER.size + head)
        rest = memoryview(data)[max(room, 0):][-self.tail_cap:] if self.tail_cap else memoryview(b"")
        if rest:
            pos = (self.total + len(data) - len(rest) - min(self.total + len(data), self.head_cap)) % self.tail_cap
            first = min(len(rest), self.tail_cap - pos)
            os.pwrite(self.fd, rest[:first], _HEADER.size + self.head_cap + pos)
            if first < len(rest):
                os.pwrite(self.fd, rest[first:], _HEADER.size + self.head_cap)
        self.total += len(data)
        self._header()

    def sync(self) -> None:
        os.fdatasync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


_MAGIC = b"pmspool1"
_HEADER = struct.Struct("<8sQQQ")


def read_spool(path) -> Log | None:
    """The Log a Spool at `path` kept (render it with the secrets); None when there is none to read."""
    try:
        with open(path, "rb") as fh:
            magic, head_cap, tail_cap, total = _HEADER.unpack(fh.read(_HEADER.size))
            if magic != _MAGIC:
                return None
            head = fh.read(min(total, head_cap))
            ring = fh.read(tail_cap) if total > head_cap else b""
    except (OSError, struct.error):
        return None
    log = Log(head_cap + tail_cap, None)
    log.head, log.total = bytearray(head), max(total, len(head))
    log.filled = min(tail_cap, log.total - len(head), len(ring))
    log.ring = bytearray(ring.ljust(tail_cap, b"\0"))
    log.pos = (log.total - len(head)) % tail_cap if tail_cap else 0
    return log
