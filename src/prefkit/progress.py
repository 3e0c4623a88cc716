"""Progress bars that stay readable in log files.

On a terminal a bar redraws ten times a second; redirected to a file every redraw is a new
line, so long runs wrote megabytes of bars. Off a terminal the bar updates every 30 s.
"""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress_bar(*args, **kwargs) -> tqdm:
    if not sys.stderr.isatty():
        kwargs.setdefault("mininterval", 30.0)
    return tqdm(*args, **kwargs)
