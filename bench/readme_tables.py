#!/usr/bin/env python3
"""Rewrite each table the results pages (`docs/results.md`, `configs/*/README.md`) show after an
`autosampler table bench/results/runs/...` command with what the command prints now (the CLI test
`readmes_long_run_tables_are_what_table_prints_of_the_committed_runs` checks the same).

    python3 bench/readme_tables.py target/release/autosampler

Commands with `--best` or `--csv` are prose and left alone, as the test does. A table is the block
of lines starting with `|` that follows the command, and the note lines `table` prints after it.
"""
import glob
import os
import re
import subprocess
import sys

binary = sys.argv[1]


def rewrite(page):
    readme = open(page).read()
    out, pos = [], 0
    for m in re.finditer(r"`(autosampler table bench/results/runs/[^`]*)`", readme):
        command = m.group(1)
        if "--best" in command or "--csv" in command:
            continue
        args = []
        for word in command.split()[1:]:
            if word.endswith("/*"):
                args += sorted(p for p in glob.glob(word) if os.path.isdir(p))  # as the test: folders
            else:
                args.append(word)
        new = subprocess.run([binary] + args, check=True, capture_output=True, text=True).stdout.strip()
        start = readme.index("\n| run |", m.end()) + 1
        lines = readme[start:].split("\n")
        n = 0
        while lines[n].startswith("|"):
            n += 1
        # the notes `table` printed after the table the last time: blank line + a line per note
        notes = [l for l in new.split("\n") if l and not l.startswith("|")]
        while n + 1 < len(lines) and lines[n] == "" and any(lines[n + 1].startswith(x[:20]) for x in notes):
            n += 2
        end = start + len("\n".join(lines[:n]))
        out.append(readme[pos:start] + new)
        pos = end
        print(f"{command}: {len(new.splitlines())} lines", file=sys.stderr)
    out.append(readme[pos:])
    tmp = page + ".part"
    open(tmp, "w").write("".join(out))
    os.replace(tmp, page)


for page in ["docs/results.md"] + sorted(glob.glob("configs/*/README.md")):
    rewrite(page)
