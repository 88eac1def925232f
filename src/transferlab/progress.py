"""The one progress bar of the project: tqdm on stderr, off where nobody watches.

A bar is drawn only when stderr is a terminal (tqdm's `disable=None`), so the
logs of queued or redirected runs stay clean; `TRANSFERLAB_NO_PROGRESS=1` or
`disable=True` hides it everywhere. Imports tqdm only, no torch.
"""

from __future__ import annotations

import os
import sys

NO_PROGRESS = "TRANSFERLAB_NO_PROGRESS"


def progress_enabled(progress: bool = True) -> bool:
    """False when the caller or the environment (TRANSFERLAB_NO_PROGRESS=1) turns bars off."""
    return progress and os.environ.get(NO_PROGRESS) != "1"


def progress_bar(iterable=None, disable: bool = False, **kwargs):
    """A tqdm bar on stderr; drawn only on a terminal, never when disabled (see above)."""
    from tqdm import tqdm

    return tqdm(iterable, file=sys.stderr, dynamic_ncols=True,
                disable=None if progress_enabled(not disable) else True, **kwargs)


__all__ = ["progress_bar", "progress_enabled"]
