"""Recording scenarios: one real Debian driver doing ordinary work on one QEMU device.

Each scenario names
  * `header_args`: the QEMU device arguments written into the trace's `# qemu:` line. They must
    recreate the same device layout with `-qtest ... -S` on any machine, so PCI slots are pinned
    (`addr=`) and disks are `null-co` block nodes of the recorded image's size;
  * `record_args`: the same devices as actually recorded (real images, a TFTP directory);
  * `modules`: the drivers to insmod (dependencies are resolved from modules.dep);
  * `workload`: guest shell lines (busybox ash); `check CMD...` runs CMD and fails the recording
    if it fails, so a trace is only written when the driver did its work;
  * what the trace keeps: `regions` (QEMU region names, for ISA devices) and `pci` functions
    (their BARs and configuration space); `widening` lists regions QEMU implements only at one
    access size (from QEMU 7.2's MemoryRegionOps `.impl`), whose port accesses the converter
    restores from the instruction's own size.
"""
from __future__ import annotations

from dataclasses import dataclass, field

FLOPPY_BYTES = 1474560
DISK_BYTES = 16 * 1024 * 1024
TFTP_BLOB_BYTES = 96 * 1024


@dataclass
class Scenario:
    name: str
    description: str
    header_args: list
    modules: list
    workload: str
    regions: list = field(default_factory=list)
    pci: list = field(default_factory=list)
    widening: dict = field(default_factory=dict)
    record_args: list | None = None   # default: header_args
    images: dict = field(default_factory=dict)  # node name -> size in bytes (pattern-filled file)
    tftp: bool = False
    remapped: list = field(default_factory=list)  # kept regions QEMU maps in and out at run time


def disk_swap(header_args: list, images: dict) -> list:
    """record_args for a scenario whose header uses null-co nodes: the same nodes backed by files."""
    out = []
    for arg in header_args:
        for node in images:
            null = f"driver=null-co,node-name={node},size={images[node]},read-zeroes=on"
            if arg == null:
                arg = f"driver=file,node-name={node},filename={{image:{node}}}"
        out.append(arg)
    return out


def null_disk(node: str, size: int) -> list:
    return ["-blockdev", f"driver=null-co,node-name={node},size={size},read-zeroes=on"]


NET_WORKLOAD = r"""
check ip link set eth0 up
check ip addr add 10.0.2.15/24 dev eth0
check ip route add default via 10.0.2.2
# the link may take a moment: the first pings may be lost, the command fails only if all are
check ping -c 6 -W 3 10.0.2.2
check ping -c 3 -s 1400 10.0.2.2
check tftp -g -r blob -l /tmp/blob 10.0.2.2
check_md5 /tmp/blob "$TFTP_MD5"
udhcpc -i eth0 -n -q -t 2 -T 2 -s /bin/true >/dev/null 2>&1 || true
check ip link set eth0 down
"""

BLOCK_WORKLOAD = r"""
DEV={dev}
check dd if=$DEV of=/tmp/head bs=64k count=4
check_md5 /tmp/head "$IMAGE_HEAD_MD5"
check dd if=/dev/urandom of=/tmp/pattern bs=4k count=16
check dd if=/tmp/pattern of=$DEV bs=4k seek=64 count=16 conv=fsync
drop_caches $DEV
check dd if=$DEV of=/tmp/back bs=4k skip=64 count=16
check cmp /tmp/pattern /tmp/back
check mkdosfs {mkfs_opts} $DEV
check mount -t vfat $DEV /mnt
check cp /tmp/pattern /mnt/pattern.bin
check umount /mnt
drop_caches $DEV
check mount -t vfat -o ro $DEV /mnt
check cmp /tmp/pattern /mnt/pattern.bin
check umount /mnt
"""

AUDIO_WORKLOAD = r"""
check ls /dev/dsp
check dd if=/dev/zero of=/dev/dsp bs=4k count=4
check dd if=/dev/dsp of=/dev/null bs=1k count=2
check cat /proc/asound/cards
"""

NET_SLOT = "04.0"


def nic(name: str, device: str, modules: list, widening: dict | None = None) -> Scenario:
    args = ["-netdev", "user,id=net0", "-device", f"{device},netdev=net0,addr={NET_SLOT}"]
    return Scenario(
        name=name,
        description=f"{modules[-1]} on QEMU {device}: link up, ping (64 and 1400 bytes), "
                    f"TFTP download of {TFTP_BLOB_BYTES // 1024} KiB, DHCP attempt, link down",
        header_args=args,
        record_args=["-netdev", "user,id=net0,tftp={tftp}",
                     "-device", f"{device},netdev=net0,addr={NET_SLOT}"],
        modules=modules, workload=NET_WORKLOAD, pci=[f"00:{NET_SLOT}"],
        widening=widening or {}, tftp=True)


def scenarios() -> dict:
    floppy_header = null_disk("fd0", FLOPPY_BYTES) + ["-device", "floppy,unit=0,drive=fd0"]
    ide_header = null_disk("hd0", DISK_BYTES) + ["-device", "ide-hd,drive=hd0,bus=ide.0,unit=0"]
    ahci_header = (null_disk("hd0", DISK_BYTES)
                   + ["-device", "ahci,id=ahci0,addr=05.0",
                      "-device", "ide-hd,drive=hd0,bus=ahci0.0"])
    megasas_header = (null_disk("hd0", DISK_BYTES)
                      + ["-device", "megasas,id=scsi0,addr=05.0",
                         "-device", "scsi-hd,drive=hd0,bus=scsi0.0,channel=0,scsi-id=0,lun=0"])
    sdhci_header = (null_disk("sd0", DISK_BYTES)
                    + ["-device", "sdhci-pci,id=sdhci0,addr=05.0",
                       "-device", "sd-card,drive=sd0,bus=sd-bus"])
    items = [
        Scenario(
            name="floppy",
            description="floppy.ko on QEMU's ISA FDC with ISA DMA: read, write + read back, "
                        "mkdosfs, mount/write/remount/read (vfat)",
            header_args=floppy_header, record_args=disk_swap(floppy_header, {"fd0": FLOPPY_BYTES}),
            images={"fd0": FLOPPY_BYTES},
            modules=["floppy", "vfat", "nls_cp437", "nls_ascii"],
            workload=BLOCK_WORKLOAD.format(dev="/dev/fd0", mkfs_opts=""),
            regions=["fdc", "dma-chan", "dma-cont", "dma-page"]),
        Scenario(
            name="ide",
            description="ata_piix/libata + sd_mod on PIIX3 IDE: read, write + read back, "
                        "mkdosfs, mount/write/remount/read",
            header_args=ide_header, record_args=disk_swap(ide_header, {"hd0": DISK_BYTES}),
            images={"hd0": DISK_BYTES},
            modules=["ata_piix", "sd_mod", "vfat", "nls_cp437", "nls_ascii"],
            workload=BLOCK_WORKLOAD.format(dev="/dev/sda", mkfs_opts=""),
            regions=["ide"], pci=["00:01.1"]),
        nic("ne2k_pci", "ne2k_pci", ["ne2k-pci"]),
        nic("pcnet", "pcnet", ["pcnet32"]),
        nic("e1000", "e1000", ["e1000"], {"e1000-mmio": 4}),
        nic("e1000e", "e1000e", ["e1000e"], {"e1000e-mmio": 4, "e1000e-io": 4}),
        nic("rtl8139", "rtl8139", ["8139cp"]),
        nic("e100", "i82557b", ["e100"]),
        nic("vmxnet3", "vmxnet3", ["vmxnet3"]),
        Scenario(
            name="es1370",
            description="snd-ens1370 (+ OSS emulation) on QEMU ES1370: playback and capture "
                        "through /dev/dsp, mixer read",
            header_args=["-audiodev", "none,id=audio0", "-device", "ES1370,audiodev=audio0,addr=05.0"],
            modules=["snd-ens1370", "snd-pcm-oss"],
            workload=AUDIO_WORKLOAD, pci=["00:05.0"], widening={"es1370": 4}),
        Scenario(
            name="ahci",
            description="ahci/libahci/libata + sd_mod on QEMU ICH9 AHCI: read, write + read back, "
                        "mkdosfs, mount/write/remount/read",
            header_args=ahci_header, record_args=disk_swap(ahci_header, {"hd0": DISK_BYTES}),
            images={"hd0": DISK_BYTES},
            modules=["ahci", "sd_mod", "vfat", "nls_cp437", "nls_ascii"],
            workload=BLOCK_WORKLOAD.format(dev="/dev/sda", mkfs_opts=""),
            pci=["00:05.0"]),
        Scenario(
            name="megasas",
            description="megaraid_sas + sd_mod on QEMU megasas (LSI 1078): read, write + read "
                        "back, mkdosfs, mount/write/remount/read",
            header_args=megasas_header, record_args=disk_swap(megasas_header, {"hd0": DISK_BYTES}),
            images={"hd0": DISK_BYTES},
            modules=["megaraid_sas", "sd_mod", "vfat", "nls_cp437", "nls_ascii"],
            workload=BLOCK_WORKLOAD.format(dev="/dev/sda", mkfs_opts=""),
            pci=["00:05.0"], widening={"megasas-io": 4, "megasas-mmio": 8, "megasas-queue": 8}),
        Scenario(
            name="sdhci",
            description="sdhci-pci + mmc_block on QEMU sdhci-pci with an SD card: read, write + "
                        "read back, mkdosfs, mount/write/remount/read",
            header_args=sdhci_header, record_args=disk_swap(sdhci_header, {"sd0": DISK_BYTES}),
            images={"sd0": DISK_BYTES},
            modules=["sdhci-pci", "mmc_block", "vfat", "nls_cp437", "nls_ascii"],
            workload=BLOCK_WORKLOAD.format(dev="/dev/mmcblk0", mkfs_opts=""),
            pci=["00:05.0"]),
    ]
    for name, device, driver, modules in (
            ("am53c974", "am53c974", "am53c974 (esp_scsi)", ["am53c974"]),
            ("lsi53c895a", "lsi53c895a", "sym53c8xx", ["sym53c8xx"]),
            # ioeventfd=off: QEMU would turn queue notifications into eventfd signals that
            # never reach memory_region_ops, so the trace would miss the guest's writes.
            ("virtio_scsi", "virtio-scsi-pci,ioeventfd=off", "virtio_pci + virtio_scsi",
             ["virtio_pci", "virtio_scsi"])):
        header = (null_disk("hd0", DISK_BYTES)
                  + ["-device", f"{device},id=scsi0,addr=05.0",
                     "-device", "scsi-hd,drive=hd0,bus=scsi0.0,channel=0,scsi-id=0,lun=0"])
        items.append(Scenario(
            name=name,
            description=f"{driver} + sd_mod on QEMU {device} with a scsi-hd: read, write + "
                        f"read back, mkdosfs, mount/write/remount/read",
            header_args=header, record_args=disk_swap(header, {"hd0": DISK_BYTES}),
            images={"hd0": DISK_BYTES},
            modules=modules + ["sd_mod", "vfat", "nls_cp437", "nls_ascii"],
            workload="check wait_for /dev/sda 30\n"
                     + BLOCK_WORKLOAD.format(dev="/dev/sda", mkfs_opts=""),
            pci=["00:05.0"]))
    for controller, device, modules in (
            ("uhci", "piix3-usb-uhci", ["uhci-hcd"]),
            ("ehci", "usb-ehci", ["ehci-pci"]),
            ("xhci", "qemu-xhci", ["xhci-pci"])):
        header = (null_disk("usb0", DISK_BYTES)
                  + ["-device", f"{device},id=usbhc,addr=05.0",
                     "-device", "usb-storage,drive=usb0,bus=usbhc.0,port=1"])
        items.append(Scenario(
            name=controller,
            description=f"{modules[0]} + usb-storage + sd_mod on QEMU {device} with a USB "
                        f"stick: enumeration, read, write + read back, mkdosfs, "
                        f"mount/write/remount/read",
            header_args=header, record_args=disk_swap(header, {"usb0": DISK_BYTES}),
            images={"usb0": DISK_BYTES},
            modules=modules + ["usb-storage", "sd_mod", "vfat", "nls_cp437", "nls_ascii"],
            workload="check wait_for /dev/sda 30\n"
                     + BLOCK_WORKLOAD.format(dev="/dev/sda", mkfs_opts=""),
            pci=["00:05.0"]))
    items += [
        Scenario(
            name="ac97",
            description="snd-intel8x0 (+ OSS emulation) on QEMU AC97: playback and capture "
                        "through /dev/dsp",
            header_args=["-audiodev", "none,id=audio0", "-device", "AC97,audiodev=audio0,addr=05.0"],
            modules=["snd-intel8x0", "snd-pcm-oss"],
            workload=AUDIO_WORKLOAD, pci=["00:05.0"]),
        Scenario(
            name="hda",
            description="snd-hda-intel + generic codec driver (+ OSS emulation) on QEMU "
                        "intel-hda with hda-duplex: playback and capture through /dev/dsp",
            header_args=["-audiodev", "none,id=audio0", "-device", "intel-hda,id=hda0,addr=05.0",
                         "-device", "hda-duplex,audiodev=audio0,bus=hda0.0"],
            # The codec driver first: snd-hda-intel binds codecs asynchronously right after its
            # probe and, without modprobe in the initramfs, cannot load one itself.
            modules=["snd-hda-codec-generic", "snd-hda-intel", "snd-pcm-oss"],
            workload="check wait_for /dev/dsp 20\n" + AUDIO_WORKLOAD, pci=["00:05.0"]),
        Scenario(
            name="cirrus",
            description="cirrus (DRM, fbdev emulation) on QEMU cirrus-vga: modeset, draw "
                        "through /dev/fb0, blank/unblank; SeaBIOS runs the VGA BIOS first",
            header_args=["-device", "cirrus-vga,addr=05.0"],
            modules=["cirrus"],
            workload=r"""
check wait_for /dev/fb0 20
check cat /sys/class/graphics/fb0/virtual_size
check dd if=/dev/urandom of=/dev/fb0 bs=4k count=64
echo 1 > /sys/class/graphics/fb0/blank
echo 0 > /sys/class/graphics/fb0/blank
check dd if=/dev/fb0 of=/dev/null bs=4k count=64
""",
            regions=["cirrus-io", "cirrus-low-memory"], remapped=["cirrus-low-memory"],
            pci=["00:05.0"]),
    ]
    return {s.name: s for s in items}
