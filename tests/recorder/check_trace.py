#!/usr/bin/python3
"""Checks that a recorded trace is well formed (docs/trace-format.md) and has what a recording
of its scenario must have: the expected phases in order, and given accesses in given phases.

    check_trace.py TRACE[.xz] [--phases a,b,c] [--expect PHASE:VERB:ADDR[:MIN]]... [--min-commands N]

Exit status 0 when all holds; otherwise every problem is printed as FILE:LINE: why.
"""
from __future__ import annotations

import argparse
import lzma
import re
import sys

SIZES = {"b": 1, "w": 2, "l": 4, "q": 8}
NUMBER = r"(?:0x[0-9a-fA-F]+|[0-9]+)"


def number(text: str) -> int | None:
    if re.fullmatch(NUMBER, text):
        return int(text, 0)
    return None


def read_lines(path: str) -> list:
    if path.endswith(".xz"):
        with lzma.open(path, "rt", encoding="utf-8") as f:
            return f.read().splitlines()
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def parse(path: str):
    """Returns (header dict, list of (lineno, phase, verb, addr, annotations), phases, errors)."""
    header: dict = {}
    commands: list = []
    phases: list = []
    errors: list = []
    seen_command = False
    phase = None
    for lineno, line in enumerate(read_lines(path), 1):
        where = f"{path}:{lineno}"
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            m = re.fullmatch(r"#\s*phase\s+([A-Za-z0-9_.-]+)", stripped)
            if m:
                phase = m[1]
                phases.append(phase)
                continue
            m = re.fullmatch(r"#\s*([a-z][a-z0-9-]*):\s*(.*)", stripped)
            if m and not seen_command:
                header[m[1]] = m[2]
            continue
        body, _, comment = line.partition("#")
        words = body.split()
        verb = words[0]
        annotations: dict = {}
        tokens = comment.split()
        i = 0
        while i < len(tokens):
            key = tokens[i]
            if key == "trigger":
                annotations[key] = True
                i += 1
            elif key in ("cpu", "ret") and i + 1 < len(tokens) and number(tokens[i + 1]) is not None:
                annotations[key] = number(tokens[i + 1])
                i += 2
            else:
                errors.append(f"{where}: bad annotation {' '.join(tokens[i:])!r}")
                break
        m = re.fullmatch(r"(out|in|write|read)([bwlq])", verb)
        if m:
            is_port = m[1] in ("out", "in")
            is_write = m[1] in ("out", "write")
            size = SIZES[m[2]]
            if is_port and size == 8:
                errors.append(f"{where}: {verb} is not a port access size")
                continue
            if len(words) != (3 if is_write else 2):
                errors.append(f"{where}: {verb} needs {'ADDR VAL' if is_write else 'ADDR'}")
                continue
            addr = number(words[1])
            if addr is None or (is_port and addr > 0xFFFF) or addr > 0xFFFFFFFFFFFFFFFF:
                errors.append(f"{where}: bad address {words[1]!r}")
                continue
            if is_write:
                value = number(words[2])
                if value is None or value >> (8 * size):
                    errors.append(f"{where}: value {words[2]!r} does not fit {size} byte(s)")
                    continue
            elif "ret" in annotations and annotations["ret"] >> (8 * size):
                errors.append(f"{where}: ret {annotations['ret']:#x} wider than {size} byte(s)")
                continue
            if not is_write and "ret" not in annotations:
                errors.append(f"{where}: recorded read without a ret annotation")
            if "cpu" not in annotations:
                errors.append(f"{where}: recorded access without a cpu annotation")
        elif verb in ("write", "read", "memset", "b64write", "clock_step", "clock_set"):
            pass
        else:
            errors.append(f"{where}: unknown command {verb!r}")
            continue
        seen_command = True
        if phase is None:
            errors.append(f"{where}: command before the first '# phase' line")
        commands.append((lineno, phase, verb, number(words[1]) if len(words) > 1 else None,
                         annotations))
    return header, commands, phases, errors


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("trace")
    parser.add_argument("--phases", default="", help="comma-separated phases that must appear in order")
    parser.add_argument("--expect", action="append", default=[],
                        metavar="PHASE:VERB:ADDR[:MIN]", help="at least MIN (default 1) such accesses")
    parser.add_argument("--min-commands", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        header, commands, phases, errors = parse(args.trace)
    except (OSError, UnicodeDecodeError, lzma.LZMAError) as e:
        print(f"{args.trace}: cannot read: {e}", file=sys.stderr)
        return 1
    if "qemu" not in header:
        errors.append(f"{args.trace}: no '# qemu:' header line before the first command")
    wanted = [p for p in args.phases.split(",") if p]
    position = 0
    for p in phases:
        if position < len(wanted) and p == wanted[position]:
            position += 1
    if position < len(wanted):
        errors.append(f"{args.trace}: phases {phases} do not contain {wanted} in order")
    if len(commands) < args.min_commands:
        errors.append(f"{args.trace}: {len(commands)} commands, expected at least {args.min_commands}")
    for spec in args.expect:
        parts = spec.split(":")
        if len(parts) not in (3, 4) or number(parts[2]) is None:
            errors.append(f"--expect {spec!r}: expected PHASE:VERB:ADDR[:MIN]")
            continue
        minimum = int(parts[3]) if len(parts) == 4 else 1
        count = sum(1 for c in commands
                    if c[1] == parts[0] and c[2] == parts[1] and c[3] == number(parts[2]))
        if count < minimum:
            errors.append(f"{args.trace}: {count} x '{parts[1]} {parts[2]}' in phase {parts[0]}, "
                          f"expected at least {minimum}")
    for e in errors[:50]:
        print(e, file=sys.stderr)
    if errors:
        print(f"{args.trace}: {len(errors)} problem(s)", file=sys.stderr)
        return 1
    per_phase: dict = {}
    for command in commands:
        per_phase[command[1]] = per_phase.get(command[1], 0) + 1
    counts = ", ".join(f"{p} {per_phase.get(p, 0)}" for p in dict.fromkeys(phases))
    print(f"{args.trace}: well formed; {len(commands)} commands ({counts})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
