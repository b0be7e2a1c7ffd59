#!/usr/bin/python3
"""Tests of convert.py on small hand-written QEMU logs: pairing, size/address restoration,
phases, PCI-config trimming, and a clear file:line error for every kind of bad input."""
import json
import os
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import convert  # noqa: E402

MTREE = """FlatView #0
 AS "I/O", root: io
 Root memory region: io
  0000000000000000-00000000000003f0 (prio 0, i/o): io
  00000000000003f1-00000000000003f5 (prio 0, i/o): fdc
  00000000000003f6-0000000000000cf7 (prio 0, i/o): io @00000000000003f6
  0000000000000cf8-0000000000000cf8 (prio 0, i/o): pci-conf-idx
  0000000000000cfc-0000000000000cff (prio 0, i/o): pci-conf-data
  000000000000c000-000000000000c0ff (prio 1, i/o): rtl8139
  000000000000c100-000000000000c1ff (prio 1, i/o): es1370

FlatView #1
 AS "memory", root: system
 Root memory region: system
  0000000000000000-000000000fffffff (prio 0, ram): pc.ram
  00000000febc0000-00000000febc00ff (prio 1, i/o): rtl8139
  00000000fed00000-00000000fed003ff (prio 0, i/o): hpet
  00000000fed10000-00000000fed1001f (prio 0, i/o): usb3 port #1
  00000000fed10020-00000000fed1002f (prio 0, i/o): usb3 @0000000000000020
"""

PCI = [{"bus": 0, "devices": [
    {"bus": 0, "slot": 5, "function": 0, "regions": [
        {"type": "io", "address": 0xC000, "size": 256},
        {"type": "memory", "address": 0xFEBC0000, "size": 256}]},
    {"bus": 0, "slot": 6, "function": 0, "regions": [
        {"type": "io", "address": 0xC100, "size": 256}]}]}]


def ops(direction, cpu, addr, value, size, name):
    return (f"memory_region_ops_{direction} cpu {cpu} mr 0x55d0 addr {addr:#x} value {value:#x} "
            f"size {size} name '{name}'")


def phase_lines(name, cpu=0):
    out = []
    for ch in name + "\n":
        out += [f"iof_pio cpu {cpu} out b", ops("write", cpu, 0x500, ord(ch), 1, "io")]
    return out


class ConvertTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="convert-test.")
        self.mtree = self.write("mtree.txt", MTREE)
        self.pci = self.write("pci.json", json.dumps(PCI))

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def write(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def run_convert(self, lines, regions=("fdc",), pci=("00:05.0", "00:06.0"), widening=None):
        log = self.write("trace.log", "\n".join(lines) + "\n")
        text, stats, phases = convert.convert(log, self.mtree, self.pci,
                                              convert.Selection(list(regions), list(pci)),
                                              ["# qemu: -machine pc"], widening or {"es1370": 4})
        commands = [line for line in text.splitlines() if not line.startswith("# ")]
        return commands, stats, phases, log

    def assert_error(self, lines, *fragments):
        with self.assertRaises(convert.ConvertError) as ctx:
            self.run_convert(lines)
        for fragment in fragments:
            self.assertIn(fragment, str(ctx.exception))

    # -- conversion

    def test_port_accesses_keep_cpu_and_masked_read_value(self):
        commands, _, _, _ = self.run_convert([
            "iof_pio cpu 1 in b", ops("read", 1, 0x3F4, 0x5280, 1, "fdc"),
            "iof_pio cpu 0 out b", ops("write", 0, 0x3F5, 0x8, 1, "fdc")])
        self.assertEqual(commands, ["inb 0x3f4 # cpu 1 ret 0x80", "outb 0x3f5 0x8 # cpu 0"])

    def test_widened_port_access_gets_the_instructions_size(self):
        commands, stats, _, _ = self.run_convert([
            "iof_pio cpu 0 out b", ops("write", 0, 0xC109, 0x3, 4, "es1370"),
            "iof_pio cpu 0 in v66", ops("read", 0, 0xC110, 0xABCD1234, 4, "es1370"),
            "iof_pio cpu 0 in v", ops("read", 0, 0xC104, 0x60, 4, "es1370")])
        self.assertEqual(commands, ["outb 0xc109 0x3 # cpu 0", "inw 0xc110 # cpu 0 ret 0x1234",
                                    "inl 0xc104 # cpu 0 ret 0x60"])
        self.assertEqual(stats.restored_size, 2)

    def test_split_port_access_is_joined(self):
        commands, _, _, _ = self.run_convert([
            "iof_pio cpu 0 out v", ops("write", 0, 0xC000, 0x11, 1, "rtl8139"),
            ops("write", 0, 0xC001, 0x22, 1, "rtl8139"), ops("write", 0, 0xC002, 0x33, 1, "rtl8139"),
            ops("write", 0, 0xC003, 0x44, 1, "rtl8139")])
        self.assertEqual(commands, ["outl 0xc000 0x44332211 # cpu 0"])

    def test_mmio_through_an_io_alias_gets_the_guests_address(self):
        commands, stats, _, _ = self.run_convert([
            ops("read", 1, 0xC010, 0xFFFFFFFF12345678, 2, "rtl8139"),
            "iof_mmio cpu 1 r 0xfebc0010 2"])
        self.assertEqual(commands, ["readw 0xfebc0010 # cpu 1 ret 0x5678"])
        self.assertEqual(stats.restored_address, 1)

    def test_device_lines_inside_a_guest_mmio_access_are_not_taken_for_it(self):
        # QEMU traces a write before the device handler runs and a read after it; an MSI the
        # handler raises on the vCPU thread sits between the guest's line and its marker.
        commands, stats, _, _ = self.run_convert([
            ops("write", 1, 0xFEE01004, 0x21, 4, "apic-msi"),
            ops("write", 1, 0xFEBC0010, 0x5, 4, "rtl8139"),
            ops("write", 1, 0xFEE02004, 0x22, 4, "apic-msi"),
            "iof_mmio cpu 1 w 0xfebc0010 4",
            ops("write", 0, 0xFEE02004, 0x22, 4, "apic-msi"),
            ops("read", 0, 0xFEBC0014, 0x7, 4, "rtl8139"),
            "iof_mmio cpu 0 r 0xfebc0014 4"])
        self.assertEqual(commands, ["writel 0xfebc0010 0x5 # cpu 1",
                                    "readl 0xfebc0014 # cpu 0 ret 0x7"])
        self.assertEqual(stats.unpaired_ops_lines, 3)

    def test_region_names_with_spaces_match_the_memory_map(self):
        commands, _, _, _ = self.run_convert([
            ops("read", 0, 0xFED10004, 0x1, 4, "usb3 port #1"), "iof_mmio cpu 0 r 0xfed10004 4",
            ops("read", 0, 0xFED10020, 0x2, 4, "usb3"), "iof_mmio cpu 0 r 0xfed10020 4"],
            regions=("usb3 port #1", "usb3"))
        self.assertEqual(commands, ["readl 0xfed10004 # cpu 0 ret 0x1",
                                    "readl 0xfed10020 # cpu 0 ret 0x2"])

    def test_interleaved_vcpus_are_paired_per_vcpu(self):
        commands, _, _, _ = self.run_convert([
            "iof_pio cpu 1 out b",
            "iof_pio cpu 0 in b", ops("read", 0, 0x3F4, 0x80, 1, "fdc"),
            ops("write", 1, 0x3F5, 0x4, 1, "fdc")])
        self.assertEqual(commands, ["inb 0x3f4 # cpu 0 ret 0x80", "outb 0x3f5 0x4 # cpu 1"])

    def test_device_initiated_and_unselected_accesses_are_dropped(self):
        commands, stats, _, _ = self.run_convert([
            ops("write", -1, 0xFEE00000, 0x0, 4, "apic-msi"),
            ops("read", 0, 0xFED000F0, 0x1, 4, "hpet"), "iof_mmio cpu 0 r 0xfed000f0 4",
            "iof_pio cpu 0 in b", ops("read", 0, 0x3F4, 0x80, 1, "fdc")])
        self.assertEqual(commands, ["inb 0x3f4 # cpu 0 ret 0x80"])
        self.assertEqual(stats.device_initiated, 1)

    def test_phases_firmware_kernel_and_guest_marked(self):
        lines = (["iof_pio cpu 0 out v66", ops("write", 0, 0x510, 0x19, 2, "fwcfg")]
                 + phase_lines("probe", cpu=1)
                 + ["iof_pio cpu 1 in b", ops("read", 1, 0x3F4, 0x80, 1, "fdc")])
        commands, _, phases, _ = self.run_convert(lines)
        self.assertEqual(phases, ["firmware", "kernel", "probe"])
        self.assertEqual(commands, ["inb 0x3f4 # cpu 1 ret 0x80"])

    def test_bios_code_after_the_hand_over_is_firmware_again(self):
        # Linux's real-mode setup calls INT 13h (EDD): SeaBIOS, below 1 MiB, drives the disk.
        lines = (["iof_pio cpu 0 out v66 low", ops("write", 0, 0x518, 0x19, 4, "fwcfg.dma"),
                  "iof_pio cpu 0 in b low", ops("read", 0, 0x3F4, 0x80, 1, "fdc"),
                  "iof_pio cpu 0 in b", ops("read", 0, 0x3F4, 0x80, 1, "fdc")]
                 + phase_lines("probe")
                 + ["iof_pio cpu 0 in b", ops("read", 0, 0x3F5, 0x1, 1, "fdc")])
        log = self.write("trace.log", "\n".join(lines) + "\n")
        text, _, phases = convert.convert(log, self.mtree, self.pci,
                                          convert.Selection(["fdc"], []), [], {})
        self.assertEqual(phases, ["firmware", "kernel", "firmware", "kernel", "probe"])
        self.assertEqual(text.splitlines(), [
            "# phase firmware", "# phase kernel", "# phase firmware",
            "inb 0x3f4 # cpu 0 ret 0x80", "# phase kernel", "inb 0x3f4 # cpu 0 ret 0x80",
            "# phase probe", "inb 0x3f5 # cpu 0 ret 0x1"])

    def test_pci_config_kept_only_for_selected_functions_with_its_cf8(self):
        commands, _, _, _ = self.run_convert([
            "iof_pio cpu 0 out v", ops("write", 0, 0xCF8, 0x80000800, 4, "pci-conf-idx"),
            "iof_pio cpu 0 in v", ops("read", 0, 0xCFC, 0x70008086, 4, "pci-conf-data"),
            "iof_pio cpu 0 out v", ops("write", 0, 0xCF8, 0x80002800, 4, "pci-conf-idx"),
            "iof_pio cpu 0 in v66", ops("read", 0, 0xCFC, 0x813910EC, 2, "pci-conf-data"),
            "iof_pio cpu 0 in v66", ops("read", 0, 0xCFE, 0x8139, 2, "pci-conf-data")])
        self.assertEqual(commands, ["outl 0xcf8 0x80002800 # cpu 0", "inw 0xcfc # cpu 0 ret 0x10ec",
                                    "inw 0xcfe # cpu 0 ret 0x8139"])

    # -- bad input: each names file:line and why

    def test_unknown_log_line(self):
        self.assert_error(["iof_pio cpu 0 in b", "garbage here"], "trace.log:2:",
                          "not a memory_region_ops trace line")

    def test_malformed_ops_line(self):
        self.assert_error(["memory_region_ops_read cpu x mr 0x1 addr 0x3f4"], "trace.log:1:",
                          "malformed memory_region_ops line")

    def test_bad_access_size(self):
        self.assert_error([ops("read", 0, 0x3F4, 0, 3, "fdc")], "trace.log:1:", "size 3")

    def test_malformed_pio_marker(self):
        self.assert_error(["iof_pio cpu 0 sideways b"], "trace.log:1:", "port-instruction marker")

    def test_malformed_mmio_marker(self):
        self.assert_error(["iof_mmio cpu 0 r 0xfebc0000 3"], "trace.log:1:", "MMIO marker")

    def test_access_outside_the_final_memory_map(self):
        self.assert_error(["iof_pio cpu 0 in b", ops("read", 0, 0xC000, 0, 1, "ne2000")],
                          "trace.log:2:", "'rtl8139'")

    def test_remapped_region_is_not_held_to_the_final_map(self):
        log = self.write("trace.log", "\n".join([
            ops("write", 0, 0xA0000, 0x7, 1, "cirrus-low-memory"),
            "iof_mmio cpu 0 w 0xa0000 1"]) + "\n")
        with self.assertRaises(convert.ConvertError):
            convert.convert(log, self.mtree, self.pci,
                            convert.Selection(["cirrus-low-memory"], []), [], {})
        text, _, _ = convert.convert(log, self.mtree, self.pci,
                                     convert.Selection(["cirrus-low-memory"], [],
                                                       remapped=["cirrus-low-memory"]), [], {})
        self.assertIn("writeb 0xa0000 0x7 # cpu 0", text)

    def test_selected_device_access_without_trace_line_is_an_error(self):
        self.assert_error(["iof_mmio cpu 0 w 0xfebc0010 2"], "trace.log:1:", "ioeventfd")

    def test_phase_port_written_wider_than_a_byte(self):
        self.assert_error(["iof_pio cpu 0 out v66", ops("write", 0, 0x500, 0x4141, 2, "io")],
                          "trace.log:2:", "phase port written with size 2")

    def test_bad_phase_name(self):
        self.assert_error(phase_lines("Bad Name"), "bad phase name")

    def test_unterminated_phase_name(self):
        self.assert_error(phase_lines("probe")[:-2], "never terminated")

    def test_bad_mtree_line(self):
        self.write("mtree.txt", MTREE + "what is this\n")
        self.assert_error([], "mtree.txt:", "unexpected line")

    def test_selected_pci_function_missing(self):
        log = self.write("trace.log", "")
        with self.assertRaises(convert.ConvertError) as ctx:
            convert.convert(log, self.mtree, self.pci, convert.Selection([], ["00:09.0"]), [], {})
        self.assertIn("no PCI function", str(ctx.exception))

    def test_cli_reports_error_and_exit_status(self):
        log = self.write("trace.log", "nonsense\n")
        out = os.path.join(self.dir, "out.qtest")
        code = convert.main([log, "--mtree", self.mtree, "--pci", self.pci, "-o", out])
        self.assertEqual(code, 1)
        self.assertFalse(os.path.exists(out))


if __name__ == "__main__":
    unittest.main()
