"""What a benchmark job calls first thing: one fixed-size record of its start, appended to a
shared file with O_APPEND (atomic), so the harness can count completions and read start times
across threads and processes alike.

Kept to ``os`` and ``time`` on purpose: RQ's forked work horse imports the job's module afresh
for every job, so anything heavier here would be charged to the system under test.
"""

import os
import time

REC_FMT = "{:010d} {:017.6f} {:017.6f}\n"
REC_LEN = len(REC_FMT.format(0, 0.0, 0.0))
_fd = -1
_pid = -1


def record(seq: int, t_ref: float) -> None:
    """Note that job ``seq`` started now; ``t_ref`` is its insert time or due time (or 0)."""
    global _fd, _pid
    now = time.time()
    pid = os.getpid()
    if _pid != pid:  # first job in this process, or a forked child
        _fd = os.open(os.environ["PEER_MARK_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        _pid = pid
    os.write(_fd, REC_FMT.format(seq, t_ref, now).encode())
