"""A run's log as it is kept: the head and the tail in bounded memory, redacted when rendered."""
from __future__ import annotations

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
