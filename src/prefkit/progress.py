"""Progress bars that stay readable in log files.

On a terminal a bar redraws in place. Redirected to a file or a pipe, a redraw is a
carriage return and a padded line, so logs filled with bars and a bench's last line came
after thousands of spaces. Off a terminal a bar therefore draws nothing while it runs and
writes one plain line when it closes (``embedding: 4096/4096 text in 01:12 (56.9 text/s)``).
"""

from __future__ import annotations

import io
import sys

from tqdm.auto import tqdm


class _Sink(io.TextIOBase):
    """Swallows the bar's redraws."""

    def write(self, text: str) -> int:
        return len(text)


class QuietBar(tqdm):
    """A tqdm that counts silently and reports once, on a line of its own, when closed."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["file"] = _Sink()
        kwargs["mininterval"] = float("inf")
        super().__init__(*args, **kwargs)

    def close(self) -> None:
        report = not getattr(self, "disable", True)
        super().close()
        if report:
            print(self.final_line(), file=sys.stderr, flush=True)

    def final_line(self) -> str:
        elapsed = self.format_dict["elapsed"]
        done = f"{self.n:g}/{self.total:g}" if self.total else f"{self.n:g}"
        rate = f" ({self.n / elapsed:.3g} {self.unit}/s)" if elapsed > 0 and self.n else ""
        desc = f"{self.desc}: " if self.desc else ""
        return f"{desc}{done} {self.unit} in {self.format_interval(elapsed)}{rate}"


def progress_bar(*args, **kwargs) -> tqdm:
    if not sys.stderr.isatty():
        return QuietBar(*args, **kwargs)
    return tqdm(*args, **kwargs)
