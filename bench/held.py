#!/usr/bin/env python3
"""How long each feed's readers waited behind running transactions, from a `minqing` log taken
with `minqing_kit::feed::tail=debug`: each line "committed events came through after waiting
behind a running transaction" ends one wait (an episode) of the feed's shared tail reader.
A feed read by two tail readers (one passing the running transactions of lanes whose kinds its
subscribers do not want, `lanes_passed=true`) is counted as two, the passing one marked "+lanes".
Prints, per feed, the episodes, their total, median, 90th percentile and longest, and how many
lasted over 50 and over 100 ms.
    python3 bench/held.py up.log
"""
import collections
import re
import sys

ANSI = re.compile(r"\x1b\[[0-9;]*m")
waits = collections.defaultdict(list)
with open(sys.argv[1], encoding="utf-8", errors="replace") as log:
    for line in log:
        if "waiting behind a running transaction" not in line:
            continue
        line = ANSI.sub("", line)
        feed = re.search(r"feed=(\S+)", line)
        held = re.search(r"held_us=(\d+)", line)
        if feed and held:
            name = feed.group(1) + ("+lanes" if "lanes_passed=true" in line else "")
            waits[name].append(int(held.group(1)) / 1000)
for feed, ms in sorted(waits.items()):
    ms.sort()
    n = len(ms)
    print(
        f"  {feed:<14} {n:5} waits, {sum(ms) / 1000:6.2f} s in all, median {ms[n // 2]:.1f} ms, "
        f"p90 {ms[int(n * 0.9)]:.1f} ms, longest {ms[-1]:.0f} ms; "
        f"over 50 ms {sum(1 for x in ms if x > 50)}, over 100 ms {sum(1 for x in ms if x > 100)}"
    )
