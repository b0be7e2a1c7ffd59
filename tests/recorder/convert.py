#!/usr/bin/python3
"""Turns a QEMU trace log of a recorded boot into an annotated qtest trace (docs/trace-format.md).

Input: the -D log of `-trace 'memory_region_ops_*'` with guest_access_plugin's markers
(`-d plugin`, `-accel tcg,thread=single`), QEMU's `info mtree -f` text and `query-pci` answer, and
a selection (which devices the trace is about). Output: one command per guest access to those
devices, with `# cpu N` / `ret V`, PCI-config accesses to the selected functions with the CF8
writes that address them, and `# phase` lines.

What the conversion restores (see docs/recorder.md for why):
  * the guest's own access size and value: ops lines of one guest access are paired with the
    plugin marker of the same vCPU; widened accesses (device implements only 4-byte accesses) get
    the guest's size and the read value masked to it, split ones are joined again;
  * the guest's own MMIO address (rtl8139's MMIO BAR is an alias traced under its port range);
  * phases: bytes written to the phase port spell a phase name ending in '\\n'; the boot starts in
    `firmware`, and `kernel` starts after the last fw_cfg access (the option ROM that loads Linux
    reads it last; Linux itself does not touch fw_cfg without the qemu_fw_cfg module).

Every malformed input line is an error naming file:line and the problem.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field

PHASE_PORT = 0x500
PCI_CONFIG_ADDRESS = 0xCF8
PCI_CONFIG_DATA = range(0xCFC, 0xD00)
FW_CFG_REGIONS = ("fwcfg", "fwcfg.dma", "fwcfg.data", "fwcfg.ctl")
PORT_SPACE_END = 0x10000


class ConvertError(Exception):
    """Bad input: the message names where (file:line) and why."""


OPS_LINE = re.compile(
    r"^memory_region_ops_(?P<dir>read|write) cpu (?P<cpu>-?\d+) mr 0x[0-9a-f]+ "
    r"addr 0x(?P<addr>[0-9a-f]+) value 0x(?P<value>[0-9a-f]+) size (?P<size>\d+) "
    r"name '(?P<name>[^']*)'$")
PIO_MARKER = re.compile(r"^iof_pio cpu (?P<cpu>\d+) (?P<dir>in|out) (?P<kind>b|v|v66)"
                        r"(?P<low> low)?$")
MMIO_MARKER = re.compile(r"^iof_mmio cpu (?P<cpu>\d+) (?P<dir>[rw]) 0x(?P<addr>[0-9a-f]+) "
                         r"(?P<size>1|2|4|8)(?P<low> low)?$")
MTREE_RANGE = re.compile(r"^\s+(?P<lo>[0-9a-f]+)-(?P<hi>[0-9a-f]+) \(prio -?\d+, (?P<kind>[^)]+)\): "
                         r"(?P<name>.*?)(?: @[0-9a-f]+)?$")  # names may contain spaces


@dataclass
class OpsLine:
    lineno: int
    is_write: bool
    cpu: int
    addr: int
    value: int
    size: int
    name: str


@dataclass
class Access:
    """One access as the guest issued it."""
    lineno: int            # log line of its first ops line: the order accesses are written in
    cpu: int
    is_pio: bool
    is_write: bool
    addr: int
    size: int
    value: int
    region: str
    low: bool = False      # issued by code below 1 MiB (BIOS, option ROMs)


@dataclass
class PendingPio:
    lineno: int
    is_write: bool
    kind: str
    low: bool
    lines: list = field(default_factory=list)

    def bytes_seen(self) -> int:
        return sum(line.size for line in self.lines)


@dataclass
class Stats:
    ops_lines: int = 0
    guest_accesses: int = 0
    device_initiated: int = 0      # cpu -1: MSI writes, DMA into MMIO
    unpaired_ops_lines: int = 0    # issued by device code on a vCPU thread, not by an instruction
    restored_size: int = 0         # widened or split by QEMU, written at the guest's size
    restored_address: int = 0      # traced under an alias's address
    io_delay_writes: int = 0
    untraced_mmio: int = 0         # guest MMIO with a marker but no ops line (ioeventfd, unassigned)


def mask(size: int) -> int:
    return (1 << (8 * size)) - 1


def parse_log_line(path: str, lineno: int, text: str):
    if text.startswith("memory_region_ops_"):
        m = OPS_LINE.match(text)
        if not m:
            raise ConvertError(f"{path}:{lineno}: malformed memory_region_ops line: {text!r}")
        size = int(m["size"])
        if size not in (1, 2, 4, 8):
            raise ConvertError(f"{path}:{lineno}: access size {size} is not 1, 2, 4 or 8")
        return OpsLine(lineno, m["dir"] == "write", int(m["cpu"]), int(m["addr"], 16),
                       int(m["value"], 16), size, m["name"])
    if text.startswith("iof_pio"):
        m = PIO_MARKER.match(text)
        if not m:
            raise ConvertError(f"{path}:{lineno}: malformed port-instruction marker: {text!r}")
        return ("pio", int(m["cpu"]), m["dir"] == "out", m["kind"], bool(m["low"]))
    if text.startswith("iof_mmio"):
        m = MMIO_MARKER.match(text)
        if not m:
            raise ConvertError(f"{path}:{lineno}: malformed MMIO marker: {text!r}")
        return ("mmio", int(m["cpu"]), m["dir"] == "w", int(m["addr"], 16), int(m["size"]),
                bool(m["low"]))
    raise ConvertError(f"{path}:{lineno}: not a memory_region_ops trace line or recorder marker: "
                       f"{text[:120]!r}")


def join_lines(lines: list, base: int, size: int) -> int:
    """The guest's value from the contiguous ops lines QEMU split or widened one access into."""
    value = 0
    for line in lines:
        offset = line.addr - base
        if 0 <= offset < size:
            value |= (line.value & mask(line.size)) << (8 * offset)
    return value & mask(size)


def pio_guest_size(pending: PendingPio, first: OpsLine, widening_regions: dict) -> int:
    if pending.kind == "b":
        return 1
    if first.name in widening_regions and first.size >= widening_regions[first.name]:
        # The device widens every access: the trace cannot tell; the instruction can
        # (32/64-bit code: operand-size prefix means 16 bits).
        return 2 if pending.kind == "v66" else 4
    return 2 if pending.bytes_seen() <= 2 else 4


def pair_accesses(path: str, widening_regions: dict, stats: Stats, untraced: list | None = None) -> list:
    """Reads the log and returns the guest's accesses in log order. MMIO accesses the plugin
    saw but QEMU did not trace (a write QEMU turned into an ioeventfd signal never reaches the
    device's ops) are appended to UNTRACED as (lineno, addr, size, is_write)."""
    accesses: list = []
    pio: dict = {}       # cpu -> PendingPio
    unclaimed: dict = {}  # cpu -> ops lines waiting for an MMIO marker

    def claims(pending: PendingPio, line: OpsLine) -> bool:
        """Whether LINE is (part of) the port access the marker announced."""
        if line.addr >= PORT_SPACE_END or line.is_write != pending.is_write:
            return False
        if not pending.lines:
            return True
        last = pending.lines[-1]
        return pending.kind != "b" and pending.bytes_seen() < 4 and line.addr == last.addr + last.size

    def finish_pio(cpu: int):
        pending = pio.pop(cpu, None)
        if not pending or not pending.lines:
            return
        first = pending.lines[0]
        size = pio_guest_size(pending, first, widening_regions)
        if len(pending.lines) > 1 or first.size != size:
            stats.restored_size += 1
        accesses.append(Access(first.lineno, cpu, True, pending.is_write, first.addr, size,
                               join_lines(pending.lines, first.addr, size),
                               first.name, pending.low))

    def take_mmio_lines(waiting: list, is_write: bool, addr: int, size: int) -> list:
        """The ops lines of the MMIO access a marker closes. Lines from device code that ran on
        the vCPU thread (an MSI raised inside a register handler) sit among them: QEMU traces a
        write before calling the device and a read after it, so the guest's own write is the
        first line at the marker's address and its read the last. Without a line at that
        address (an aliased BAR traced under its target's address), the same rule applies by
        position."""
        same = [line for line in waiting if line.is_write == is_write]
        at_addr = [i for i, line in enumerate(same) if line.addr == addr]
        if at_addr:
            first = at_addr[0] if is_write else at_addr[-1]
        elif same:
            first = 0 if is_write else len(same) - 1
            while not is_write and first > 0 and sum(l.size for l in same[first:]) < size \
                    and same[first - 1].addr + same[first - 1].size == same[first].addr:
                first -= 1
        else:
            stats.unpaired_ops_lines += len(waiting)
            return []
        picked = [same[first]]
        for line in same[first + 1:]:
            if sum(l.size for l in picked) >= size or line.addr != picked[-1].addr + picked[-1].size:
                break
            picked.append(line)
        stats.unpaired_ops_lines += len(waiting) - len(picked)
        return picked

    def drop_unclaimed(cpu: int):
        stats.unpaired_ops_lines += len(unclaimed.pop(cpu, []))

    with open(path, encoding="utf-8", errors="replace") as log:
        for lineno, raw in enumerate(log, 1):
            text = raw.rstrip("\n")
            if not text.strip():
                continue
            item = parse_log_line(path, lineno, text)
            if isinstance(item, OpsLine):
                stats.ops_lines += 1
                if item.cpu < 0:
                    stats.device_initiated += 1
                    continue
                pending = pio.get(item.cpu)
                if pending and claims(pending, item):
                    pending.lines.append(item)
                    continue
                unclaimed.setdefault(item.cpu, []).append(item)
            elif item[0] == "pio":
                _, cpu, is_write, kind, low = item
                finish_pio(cpu)
                drop_unclaimed(cpu)
                pio[cpu] = PendingPio(lineno, is_write, kind, low)
            else:
                _, cpu, is_write, addr, size, low = item
                finish_pio(cpu)
                lines = take_mmio_lines(unclaimed.pop(cpu, []), is_write, addr, size)
                if not lines:
                    stats.untraced_mmio += 1
                    if untraced is not None:
                        untraced.append((lineno, addr, size, is_write))
                    continue
                first = lines[0]
                if addr != first.addr:
                    stats.restored_address += 1
                if len(lines) > 1 or first.size != size:
                    stats.restored_size += 1
                accesses.append(Access(first.lineno, cpu, False, is_write, addr, size,
                                       join_lines(lines, first.addr, size), first.name, low))
    for cpu in list(pio):
        finish_pio(cpu)
    for cpu in list(unclaimed):
        drop_unclaimed(cpu)
    accesses.sort(key=lambda a: a.lineno)
    stats.guest_accesses = len(accesses)
    return accesses


def parse_mtree(path: str) -> dict:
    """{"I/O": [(lo, hi, name)], "memory": [...]} from `info mtree -f`."""
    spaces: dict = {}
    current: list = []
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.rstrip("\n")
            if line.startswith("FlatView #"):
                current = []
                continue
            m = re.match(r'^ AS "([^"]+)", root: ', line)
            if m:
                spaces.setdefault(m[1], current)
                continue
            m = MTREE_RANGE.match(line)
            if m:
                current.append((int(m["lo"], 16), int(m["hi"], 16), m["name"]))
            elif line.strip().startswith(("Root memory region", "No rendered FlatView")) or \
                    not line.strip():
                continue
            else:
                raise ConvertError(f"{path}:{lineno}: unexpected line in `info mtree -f` output: "
                                   f"{line[:120]!r}")
    for required in ("I/O", "memory"):
        if required not in spaces:
            raise ConvertError(f"{path}: no flat view for address space {required!r}")
    return spaces


@dataclass
class Selection:
    """What a trace keeps: named QEMU regions (ISA devices) and whole PCI functions."""
    regions: list
    pci: list                 # "BB:DD.F"
    bars: list = field(default_factory=list)   # (is_io, lo, hi) of the selected functions' BARs
    # Regions the device maps in and out while it runs (the VGA window at 0xa0000 is I/O while
    # the VGA BIOS plans it and RAM when the guest maps VRAM there): the final memory map
    # cannot vouch for them, so they are not checked against it.
    remapped: list = field(default_factory=list)


def parse_bdf(text: str) -> tuple:
    m = re.fullmatch(r"([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])", text)
    if not m:
        raise ConvertError(f"PCI address {text!r} is not BB:DD.F")
    return int(m[1], 16), int(m[2], 16), int(m[3])


def load_bars(pci_json: str, selection: Selection):
    with open(pci_json, encoding="utf-8") as f:
        buses = json.load(f)
    wanted = {parse_bdf(b) for b in selection.pci}
    found = set()
    for bus in buses:
        for dev in bus["devices"]:
            bdf = (dev["bus"], dev["slot"], dev["function"])
            if bdf not in wanted:
                continue
            found.add(bdf)
            for region in dev["regions"]:
                if region["address"] < 0 or region["address"] >= 0xFFFFFFFFFFFF0000:
                    continue  # unassigned (e.g. a ROM BAR SeaBIOS switched off again)
                is_io = region["type"] == "io"
                selection.bars.append((is_io, region["address"], region["address"] + region["size"] - 1))
    missing = wanted - found
    if missing:
        raise ConvertError(f"{pci_json}: no PCI function at {sorted(missing)} (scenario pins addr=)")


def in_bars(selection: Selection, is_io: bool, addr: int) -> bool:
    return any(io == is_io and lo <= addr <= hi for io, lo, hi in selection.bars)


def check_against_mtree(spaces: dict, access: Access, log_path: str):
    """The access must hit the same region in QEMU's final flat view: a BAR that moved during
    the run, or an address restored wrongly, would make the trace lie about the layout."""
    space_name = "I/O" if access.is_pio else "memory"
    for lo, hi, name in spaces[space_name]:
        if lo <= access.addr <= hi:
            if name != access.region:
                raise ConvertError(f"{log_path}:{access.lineno}: access to {access.addr:#x} was "
                                   f"traced in region {access.region!r} but `info mtree -f` maps "
                                   f"that address to {name!r}")
            return
    raise ConvertError(f"{log_path}:{access.lineno}: address {access.addr:#x} ({access.region}) "
                       f"is in no range of the {space_name} flat view")


def command(access: Access) -> str:
    letter = {1: "b", 2: "w", 4: "l", 8: "q"}[access.size]
    if access.is_pio:
        verb = ("out" if access.is_write else "in") + letter
    else:
        verb = ("write" if access.is_write else "read") + letter
    if access.is_write:
        return f"{verb} {access.addr:#x} {access.value:#x} # cpu {access.cpu}"
    return f"{verb} {access.addr:#x} # cpu {access.cpu} ret {access.value:#x}"


def convert(log_path: str, mtree_path: str, pci_path: str, selection: Selection,
            header: list, widening_regions: dict) -> tuple:
    """Returns (text, stats, phases)."""
    stats = Stats()
    spaces = parse_mtree(mtree_path)
    load_bars(pci_path, selection)
    untraced: list = []
    accesses = pair_accesses(log_path, widening_regions, stats, untraced)
    for lineno, addr, size, is_write in untraced:
        if in_bars(selection, False, addr):
            raise ConvertError(f"{log_path}:{lineno}: the guest's {size}-byte MMIO "
                               f"{'write' if is_write else 'read'} at {addr:#x} reached the "
                               f"selected device without a memory_region_ops line (QEMU served "
                               f"it by ioeventfd?); record the device with ioeventfd=off")

    last_fw_cfg = max((i for i, a in enumerate(accesses) if a.region in FW_CFG_REGIONS), default=-1)
    out = list(header)
    phases: list = []
    guest_phase = "firmware"   # phase by the hand-over rule and the guest's own marks
    written = None             # the phase the last '# phase' line named

    def write_phase(name: str):
        nonlocal written
        if name != written:
            out.append(f"# phase {name}")
            phases.append(name)
            written = name

    def emit(access: Access, line: str):
        # After the hand-over, code below 1 MiB is the BIOS serving the OS loader (INT 13h
        # for Linux's EDD probe): its accesses are firmware accesses, wherever they fall.
        write_phase("firmware" if guest_phase != "firmware" and access.low else guest_phase)
        out.append(line)

    write_phase("firmware")
    phase_chars = ""
    selected_functions = {parse_bdf(b) for b in selection.pci}
    cf8_value = None       # last value the guest wrote to CF8
    cf8_cpu = 0
    cf8_emitted = None     # last CF8 value written into the trace
    for index, access in enumerate(accesses):
        if index == last_fw_cfg + 1 and last_fw_cfg >= 0:
            guest_phase = "kernel"
            write_phase(guest_phase)
        if access.is_pio and access.addr == PHASE_PORT and access.is_write:
            if access.size != 1:
                raise ConvertError(f"{log_path}:{access.lineno}: phase port written with size "
                                   f"{access.size}; the guest writes names one byte at a time")
            ch = chr(access.value)
            if ch == "\n":
                if not re.fullmatch(r"[a-z0-9_.-]+", phase_chars):
                    raise ConvertError(f"{log_path}:{access.lineno}: bad phase name {phase_chars!r}")
                guest_phase = phase_chars
                write_phase(guest_phase)
                phase_chars = ""
            else:
                phase_chars += ch
            continue
        if access.is_pio and access.addr == 0x80 and access.is_write:
            stats.io_delay_writes += 1
        if access.is_pio and access.addr == PCI_CONFIG_ADDRESS and access.size == 4:
            if access.is_write:
                cf8_value, cf8_cpu = access.value, access.cpu
            continue
        if access.is_pio and access.addr in PCI_CONFIG_DATA:
            if cf8_value is not None and cf8_value & 0x80000000:
                bdf = ((cf8_value >> 16) & 0xFF, (cf8_value >> 11) & 0x1F, (cf8_value >> 8) & 0x7)
                if bdf in selected_functions:
                    if cf8_emitted != cf8_value:
                        emit(access, f"outl {PCI_CONFIG_ADDRESS:#x} {cf8_value:#x} # cpu {cf8_cpu}")
                        cf8_emitted = cf8_value
                    emit(access, command(access))
            continue
        if access.region in selection.regions or in_bars(selection, access.is_pio, access.addr):
            if access.region not in selection.remapped:
                check_against_mtree(spaces, access, log_path)
            emit(access, command(access))
    if phase_chars:
        raise ConvertError(f"{log_path}: phase name {phase_chars!r} was never terminated")
    return "\n".join(out) + "\n", stats, phases


def write_atomically(path: str, text: str):
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".convert.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("log", help="QEMU -D log with memory_region_ops_* lines and plugin markers")
    parser.add_argument("--mtree", required=True, help="`info mtree -f` output at the end of the run")
    parser.add_argument("--pci", required=True, help="`query-pci` JSON answer")
    parser.add_argument("--region", action="append", default=[], help="QEMU region name to keep")
    parser.add_argument("--pci-function", action="append", default=[], metavar="BB:DD.F",
                        help="PCI function whose BARs and config space to keep")
    parser.add_argument("--remapped", action="append", default=[], metavar="NAME",
                        help="kept region that moves during the run: not checked against --mtree")
    parser.add_argument("--widening", action="append", default=[], metavar="NAME=SIZE",
                        help="region that implements only SIZE-byte accesses (QEMU widens smaller)")
    parser.add_argument("--header", action="append", default=[], help="header line (without '# ')")
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args(argv)
    try:
        widening = {}
        for item in args.widening:
            name, _, size = item.partition("=")
            if not name or size not in ("2", "4", "8"):
                raise ConvertError(f"--widening {item!r}: expected NAME=2|4|8")
            widening[name] = int(size)
        selection = Selection(args.region, args.pci_function, remapped=args.remapped)
        text, stats, phases = convert(args.log, args.mtree, args.pci, selection,
                                      [f"# {h}" for h in args.header], widening)
        write_atomically(args.output, text)
    except (ConvertError, OSError, json.JSONDecodeError) as e:
        print(f"convert: error: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"output": args.output, "phases": phases, **stats.__dict__}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
