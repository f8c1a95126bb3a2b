"""Up-front estimates of memory and work, so a run that cannot fit is refused with the
figures instead of growing until the allocator fails tens of seconds later."""
from __future__ import annotations

import os

from descent.io import UserError

# Half the machine's memory: the rest is for the OS, DVC and the other stage processes.
MEMORY_FRACTION = 0.5
# Updates one (recipe, variant) may take: ~10^10 single-example updates is hours of work
# even for the compiled loop (bench/README.md), far past what this pipeline is for.
MAX_UPDATES = 10**10
# The tutorials' literal loop (engine: loop) costs ~130 µs an update whatever the batch on a
# 2-core CPU (bench/README.md); a run estimated past a minute is announced with its figure.
LOOP_SECONDS_PER_UPDATE = 130e-6
ANNOUNCE_SECONDS = 60


def memory_limit() -> int:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: assume 8 GiB
        total = 8 << 30
    return int(total * MEMORY_FRACTION)


def gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.3g} GiB"


def check_memory(what: str, needed: float, fix: str) -> None:
    limit = memory_limit()
    if needed > limit:
        raise UserError(f"{what} would need about {gib(needed)} of memory, above this "
                        f"machine's limit of {gib(limit)} (half its RAM); {fix}")


def check_work(what: str, updates: int, fix: str) -> None:
    if updates > MAX_UPDATES:
        raise UserError(f"{what} would take {updates:.3g} updates, above the limit of "
                        f"{MAX_UPDATES:.0e}; {fix}")
