#!/usr/bin/env python3
"""CPU time of PostgreSQL's processes, grouped by the connection's application_name
(each Minqing service names its connections `minqing/<service>`).

  pgcpu.py snap FILE        write the current per-process CPU ticks to FILE
  pgcpu.py diff FILE FILE   print the seconds each group used between two snapshots

Reads /proc, so it must run on PostgreSQL's machine (as the benchmarks here do)."""
import json
import os
import subprocess
import sys

HZ = os.sysconf("SC_CLK_TCK")


def ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return None


def snap():
    out = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-At", "-F", "|", "-c",
         "SELECT pid, coalesce(nullif(application_name, ''), backend_type) FROM pg_stat_activity"],
        capture_output=True, text=True, check=True).stdout
    names = dict(line.split("|", 1) for line in out.splitlines())
    result = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if not f.read().startswith("postgres"):
                    continue
        except OSError:
            continue
        t = ticks(pid)
        if t is not None:
            result[pid] = (names.get(pid, "postgres (other)"), t)
    return result


def diff(before, after):
    groups = {}
    for pid, (name, t) in after.items():
        groups[name] = groups.get(name, 0) + t - before.get(pid, (name, 0))[1]
    for name, t in sorted(groups.items(), key=lambda g: -g[1]):
        if t:
            print(f"  postgres {name:28s} {t / HZ:7.2f} s")
    print(f"  postgres, all              {sum(groups.values()) / HZ:7.2f} s")


if sys.argv[1:2] == ["snap"]:
    with open(sys.argv[2], "w") as f:
        json.dump(snap(), f)
elif sys.argv[1:2] == ["diff"]:
    with open(sys.argv[2]) as a, open(sys.argv[3]) as b:
        diff(json.load(a), json.load(b))
else:
    sys.exit(__doc__)
