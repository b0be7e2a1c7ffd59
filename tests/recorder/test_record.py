#!/usr/bin/python3
"""Tests of the recorder's host-side pieces that need no QEMU: module load order from a
modules.dep, the initramfs archive, and the scenarios' invariants (pinned slots, portable
headers)."""
import importlib.machinery
import importlib.util
import os
import shutil
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
_loader = importlib.machinery.SourceFileLoader("recorder", os.path.join(HERE, "record"))
_spec = importlib.util.spec_from_loader("recorder", _loader)
recorder = importlib.util.module_from_spec(_spec)
_loader.exec_module(recorder)

from scenarios import scenarios  # noqa: E402


class ModuleOrderTest(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="record-test.")
        base = os.path.join(self.root, "lib", "modules", "6.1.0-test")
        os.makedirs(base)
        with open(os.path.join(base, "modules.dep"), "w") as f:
            f.write("kernel/sound/pci/snd-ens1370.ko: kernel/sound/core/snd-pcm.ko "
                    "kernel/sound/core/snd.ko kernel/sound/soundcore.ko\n"
                    "kernel/sound/core/snd-pcm.ko: kernel/sound/core/snd.ko kernel/sound/soundcore.ko\n"
                    "kernel/sound/core/snd.ko: kernel/sound/soundcore.ko\n"
                    "kernel/sound/soundcore.ko:\n"
                    "kernel/drivers/block/floppy.ko:\n")

    def tearDown(self):
        shutil.rmtree(self.root, ignore_errors=True)

    def names(self, wanted):
        return [os.path.basename(p) for p in recorder.module_paths(self.root, "6.1.0-test", wanted)]

    def test_dependencies_come_first_each_once(self):
        self.assertEqual(self.names(["snd_ens1370", "floppy"]),
                         ["soundcore.ko", "snd.ko", "snd-pcm.ko", "snd-ens1370.ko", "floppy.ko"])

    def test_unknown_module_is_named(self):
        with self.assertRaises(recorder.RecordError) as ctx:
            self.names(["no-such-driver"])
        self.assertIn("no-such-driver", str(ctx.exception))


class InitramfsTest(unittest.TestCase):
    def test_newc_entries_are_aligned_and_end_with_the_trailer(self):
        data = recorder.cpio_newc([("bin", 0o40755, None), ("init", 0o100755, b"#!/bin/sh\n")])
        offset, names = 0, []
        while True:
            self.assertEqual(data[offset:offset + 6], b"070701")
            fields = [int(data[offset + 6 + 8 * i: offset + 14 + 8 * i], 16) for i in range(13)]
            size, namesize = fields[6], fields[11]
            name = data[offset + 110: offset + 110 + namesize - 1].decode()
            names.append(name)
            offset += 110 + namesize
            offset += -offset % 4
            self.assertEqual(offset % 4, 0)
            offset += size + (-size % 4)
            if name == "TRAILER!!!":
                break
        self.assertEqual(names, ["bin", "init", "TRAILER!!!"])
        self.assertEqual(offset, len(data))


class ScenarioTest(unittest.TestCase):
    def test_headers_are_portable_and_pci_slots_pinned(self):
        for scenario in scenarios().values():
            header = " ".join(scenario.header_args)
            self.assertNotIn("{", header, scenario.name)
            self.assertNotIn("filename=", header, scenario.name)
            for arg in scenario.header_args:
                if arg.startswith(("e1000", "ne2k_pci", "pcnet", "rtl8139", "i8255", "ES1370",
                                   "AC97", "intel-hda", "ahci", "megasas", "sdhci-pci",
                                   "piix3-usb-uhci", "usb-ehci", "qemu-xhci", "cirrus-vga", "am53c974",
                                   "lsi53c895a", "virtio-scsi-pci", "vmxnet3")):
                    self.assertIn("addr=", arg, scenario.name)

    def test_every_scenario_keeps_something(self):
        for scenario in scenarios().values():
            self.assertTrue(scenario.regions or scenario.pci, scenario.name)


if __name__ == "__main__":
    unittest.main()
