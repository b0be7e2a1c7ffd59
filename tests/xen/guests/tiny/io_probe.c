/* Scripted device accesses through the device model, printed as "TINY <what>=<value>" lines that
 * the dom0 script of the io-probe lab test compares with what the hardware must answer:
 * PCI config of the i440FX host bridge, the floppy controller (status, VERSION command, the VENOM
 * command sequence), an unclaimed port, the "edu" PCI device's MMIO BAR, Xen's own HPET and #UD. */
#include "tiny.h"

#define FDC_DOR 0x3f2
#define FDC_MSR 0x3f4
#define FDC_FIFO 0x3f5
#define MSR_RQM 0x80
#define MSR_DIO 0x40

/* Where the test maps the edu device's BAR0: above the 32 MB of RAM, away from Xen's own LAPIC,
 * IOAPIC and HPET ranges. */
#define EDU_BAR0 0xf0000000u
#define HPET_BASE 0xfed00000u
#define VENOM_FIFO_WRITES 1024

/* Waits (bounded) until the FDC wants a byte from us (dio=0) or has one for us (dio=1). */
static int fdc_wait(uint8_t dio)
{
    for (int i = 0; i < 100000; i++) {
        uint8_t msr = inb(FDC_MSR);
        if ((msr & MSR_RQM) && (msr & MSR_DIO) == dio)
            return 1;
    }
    return 0;
}

static void fdc_reset(void)
{
    outb(FDC_DOR, 0x00);
    outb(FDC_DOR, 0x0c); /* out of reset, DMA/IRQ enabled, drive 0 selected */
}

/* VERSION (0x10) answers one result byte: 0x90 on an 82077AA-compatible controller. */
static int fdc_version(void)
{
    if (!fdc_wait(0))
        return -1;
    outb(FDC_FIFO, 0x10);
    if (!fdc_wait(MSR_DIO))
        return -2;
    return inb(FDC_FIFO);
}

void tiny_main(void)
{
    tiny_printf("TINY-START io-probe\n");

    uint32_t id = pci_read32(0, 0, 0, 0);
    tiny_printf("TINY pci-00:00.0-vendor=%04x\n", id & 0xffff);
    tiny_printf("TINY pci-00:00.0-device=%04x\n", id >> 16);

    tiny_printf("TINY unclaimed-port-0x2e8=%02x\n", inb(0x2e8));

    fdc_reset();
    tiny_printf("TINY fdc-msr-after-reset=%02x\n", inb(FDC_MSR));
    tiny_printf("TINY fdc-version=%02x\n", fdc_version());

    /* VENOM (CVE-2015-3456): a command, then twice as many FIFO bytes as the controller's 512-byte
     * FIFO; an unfixed QEMU wrote past its buffer. The controller must still answer afterwards. */
    tiny_printf("TINY venom-start\n");
    outb(FDC_FIFO, 0x0a);
    for (int i = 0; i < VENOM_FIFO_WRITES; i++)
        outb(FDC_FIFO, 0x42);
    tiny_printf("TINY venom-fifo-writes=%u\n", VENOM_FIFO_WRITES);
    tiny_printf("TINY venom-msr-after=%02x\n", inb(FDC_MSR));
    fdc_reset();
    tiny_printf("TINY fdc-version-after-venom=%02x\n", fdc_version());

    int edu = pci_find(0x1234, 0x11e8);
    tiny_printf("TINY edu-devfn=%d\n", edu);
    if (edu >= 0) {
        unsigned dev = (unsigned)edu >> 3, fn = (unsigned)edu & 7;
        pci_write32(0, dev, fn, 0x10, EDU_BAR0);
        pci_write32(0, dev, fn, 0x04, pci_read32(0, dev, fn, 0x04) | 0x2); /* memory decode on */
        tiny_printf("TINY edu-bar0=%08x\n", pci_read32(0, dev, fn, 0x10) & ~0xfu);
        tiny_printf("TINY edu-mmio-id=%08x\n", mmio_read32(EDU_BAR0 + 0x00));
        /* The liveness register reads back the bitwise inverse of what was written. */
        mmio_write32(EDU_BAR0 + 0x04, 0x12345678);
        tiny_printf("TINY edu-mmio-liveness=%08x\n", mmio_read32(EDU_BAR0 + 0x04));
    }

    /* Emulated by Xen itself, not the device model: vendor id 0x8086 in bits 31:16. */
    tiny_printf("TINY xen-hpet-vendor=%04x\n", mmio_read32(HPET_BASE) >> 16);

    tiny_printf("TINY ud2-vector=%d\n", TINY_TRY("ud2"));

    tiny_printf("TINY-DONE\n");
}
