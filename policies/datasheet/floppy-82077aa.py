#!/usr/bin/python3
"""Writes floppy-82077aa.json (beside this script): the floppy controller's I/O sequence graph, written by hand from
Intel's 82077AA CHMOS Single-Chip Floppy Disk Controller datasheet (order no. 290166), the
specification-derived baseline (Nioh's approach) that binary-derived policies are compared with.

Sources in the datasheet: register map (section 2.0 / Table 1), command set summary (Table 6:
phases, byte counts, result counts), invalid command handling (section 8.x: an undefined command
byte is answered by one result byte, ST0 = 0x80), reset (DOR bit 2 and DSR bit 7).

The command table is data; run this script to regenerate the JSON (policies/Makefile-less: one command).
"""
import itertools
import json
import os
import sys

MT, MFM, SK = 0x80, 0x40, 0x20

# name: (opcode, optional flag bits, parameter bytes after the command byte, result bytes)
COMMANDS = {
    "read-data":           (0x06, MT | MFM | SK, 8, 7),
    "read-deleted-data":   (0x0C, MT | MFM | SK, 8, 7),
    "write-data":          (0x05, MT | MFM, 8, 7),
    "write-deleted-data":  (0x09, MT | MFM, 8, 7),
    "read-track":          (0x02, MFM, 8, 7),
    "verify":              (0x16, MT | MFM | SK, 8, 7),
    "scan-equal":          (0x11, MT | MFM | SK, 8, 7),
    "scan-low-or-equal":   (0x19, MT | MFM | SK, 8, 7),
    "scan-high-or-equal":  (0x1D, MT | MFM | SK, 8, 7),
    "format-track":        (0x0D, MFM, 5, 7),
    "read-id":             (0x0A, MFM, 1, 7),
    "recalibrate":         (0x07, 0, 1, 0),
    "sense-interrupt":     (0x08, 0, 0, 2),
    "specify":             (0x03, 0, 2, 0),
    "sense-drive-status":  (0x04, 0, 1, 1),
    "seek":                (0x0F, 0, 2, 0),
    "relative-seek":       (0x8F, 0x40, 2, 0),   # MT position holds 1, bit 6 is DIR
    "configure":           (0x13, 0, 3, 0),
    "dumpreg":             (0x0E, 0, 0, 10),
    "perpendicular-mode":  (0x12, 0, 1, 0),
    "version":             (0x10, 0, 0, 1),
    "lock":                (0x14, 0x80, 0, 1),   # bit 7 is LOCK
}

# Parameter bytes whose value the datasheet fixes: the drive/head byte "x x x x x HDS DS1 DS0".
DRIVE_HEAD = {"mask": "0xf8", "equals": "0x0"}
FIRST_PARAM_IS_DRIVE_HEAD = {
    "read-data", "read-deleted-data", "write-data", "write-deleted-data", "read-track", "verify",
    "scan-equal", "scan-low-or-equal", "scan-high-or-equal", "format-track", "read-id",
    "recalibrate", "sense-drive-status", "seek", "relative-seek",
}
# CONFIGURE's first parameter byte is 0 (datasheet: "0 0 0 0 0 0 0 0").
FIRST_PARAM_EXACT = {"configure": 0}

SOURCE = "Intel 82077AA datasheet (290166), Table 6 command set"


def variants(opcode, flags):
    bits = [b for b in (0x80, 0x40, 0x20) if flags & b]
    out = set()
    for n in range(len(bits) + 1):
        for combo in itertools.combinations(bits, n):
            out.add(opcode | sum(combo))
    return sorted(out)


def hexs(v):
    return "0x%x" % v


def main(out_path):
    nodes, edges, entries, exits = [], [], [], []
    defined = set()

    def node(**kw):
        nodes.append(kw)
        return kw["id"]

    for name, (opcode, flags, params, results) in COMMANDS.items():
        values = variants(opcode, flags)
        defined.update(values)
        prev = node(id=name, region="fdc", offset="0x5", size=1, dir="write",
                    value={"set": [hexs(v) for v in values]},
                    provenance={"source": SOURCE + ": " + name + " command phase"})
        entries.append(prev)
        for i in range(1, params + 1):
            value = None
            if i == 1 and name in FIRST_PARAM_IS_DRIVE_HEAD:
                value = DRIVE_HEAD
            elif i == 1 and name in FIRST_PARAM_EXACT:
                value = {"exact": hexs(FIRST_PARAM_EXACT[name])}
            kw = dict(id="%s.p%d" % (name, i), region="fdc", offset="0x5", size=1, dir="write",
                      provenance={"source": SOURCE + ": %s parameter byte %d" % (name, i)})
            if value:
                kw["value"] = value
            cur = node(**kw)
            edges.append([prev, cur])
            prev = cur
        if results == 0:
            exits.append(prev)  # no result phase: the FDC is ready for the next command
        for i in range(1, results + 1):
            cur = node(id="%s.r%d" % (name, i), region="fdc", offset="0x5", size=1, dir="read",
                       provenance={"source": SOURCE + ": %s result byte %d" % (name, i)})
            edges.append([prev, cur])
            prev = cur
            # SENSE INTERRUPT STATUS without a pending interrupt is an invalid command: 1 result byte.
            if name == "sense-interrupt" and i == 1:
                exits.append(cur)
        if results:
            exits.append(prev)

    # Every other command byte is invalid on the 82077AA and answered by one result byte (ST0=0x80).
    # That includes bytes later chips and QEMU give meaning to (0x8e DRIVE SPECIFICATION, 0x2e SAVE,
    # 0x4e RESTORE, 0x18 PART ID): by the datasheet they take no parameters.
    invalid = sorted(set(range(256)) - defined)
    node(id="invalid-command", region="fdc", offset="0x5", size=1, dir="write",
         value={"set": [hexs(v) for v in invalid]},
         provenance={"source": "82077AA datasheet: invalid command handling, result ST0 = 0x80"})
    node(id="invalid-command.r1", region="fdc", offset="0x5", size=1, dir="read",
         provenance={"source": "82077AA datasheet: invalid command result byte"})
    entries.append("invalid-command")
    edges.append(["invalid-command", "invalid-command.r1"])
    exits.append("invalid-command.r1")

    # Resets restart the command state machine: DOR bit 2 low (hardware reset), DSR bit 7 (software).
    node(id="dor-reset", region="fdc", offset="0x2", size=1, dir="write", value={"mask": "0x4", "equals": "0x0"},
         reset=True, provenance={"source": "82077AA datasheet: DOR bit 2 (RESET), active low"})
    node(id="dsr-reset", region="fdc", offset="0x4", size=1, dir="write", value={"mask": "0x80", "equals": "0x80"},
         reset=True, provenance={"source": "82077AA datasheet: DSR bit 7 (SW RESET)"})
    exits += ["dor-reset", "dsr-reset"]

    def anywhere(id, offset, dir, value=None, region="fdc", source=""):
        kw = dict(id=id, region=region, offset=offset, size=1, dir=dir, provenance={"source": "82077AA datasheet: " + source})
        if value:
            kw["value"] = value
        return kw

    stateless = [
        anywhere("srb-read", "0x1", "read", source="status register B"),
        anywhere("dor-read", "0x2", "read", source="digital output register"),
        anywhere("dor-write", "0x2", "write", {"mask": "0x4", "equals": "0x4"}, source="DOR drive select / motor / DMA gate, not in reset"),
        anywhere("tdr-read", "0x3", "read", source="tape drive register"),
        anywhere("tdr-write", "0x3", "write", {"mask": "0xfc", "equals": "0x0"}, source="tape drive register, bits 1:0 only"),
        anywhere("msr-read", "0x4", "read", source="main status register (polled before every FIFO byte)"),
        anywhere("dsr-write", "0x4", "write", {"mask": "0x80", "equals": "0x0"}, source="DSR data rate / precompensation, no reset"),
        anywhere("dir-read", "0x0", "read", region="dir", source="digital input register (disk change)"),
        anywhere("ccr-write", "0x0", "write", {"mask": "0xfc", "equals": "0x0"}, region="dir", source="configuration control register, data rate bits 1:0"),
    ]

    policy = {
        "format": "ioreq-filter-policy",
        "version": 1,
        "comment": "Generated by policies/datasheet/floppy-82077aa.py from the 82077AA datasheet; do not edit by hand.",
        "device": {
            "name": "floppy",
            "match": {"isa": {"kind": "isa-fdc", "base": "0x3f0"}},
            "regions": [
                {"name": "fdc", "space": "io", "base": "0x3f0", "length": 6},
                {"name": "dir", "space": "io", "base": "0x3f7", "length": 1},
            ],
        },
        "on_violation": "refuse",
        # An independent model of the chip: a driver's graphs must pass it too (docs/policy-format.md).
        "combine": "intersect",
        "graphs": [{
            "name": "floppy-82077aa-datasheet",
            "derived_from": {"method": "datasheet", "driver": "any 82077AA driver in DMA mode",
                             "build": "Intel 82077AA datasheet, order number 290166"},
            "channels": [{"name": "fdc-command", "nodes": nodes, "edges": edges, "entries": entries, "exits": exits}],
            "anywhere": stateless,
        }],
        "rules": [],
    }
    tmp = out_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(policy, f, indent=1)
        f.write("\n")
    os.replace(tmp, out_path)


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "floppy-82077aa.json"))
