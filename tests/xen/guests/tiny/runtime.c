/* Runtime of the tiny guest; see tiny.h. */
#include <stdarg.h>

#include "tiny.h"

volatile uint32_t tiny_resume_eip;
volatile int tiny_last_vector = -1;

struct exception_frame {
    uint32_t edi, esi, ebp, esp, ebx, edx, ecx, eax; /* pusha */
    uint32_t vector, error_code;
    uint32_t eip, cs, eflags;                        /* pushed by the CPU */
};

struct idt_gate {
    uint16_t offset_low, selector;
    uint8_t zero, type_attr;
    uint16_t offset_high;
} __attribute__((packed));

static struct idt_gate idt[32];
extern const uint32_t tiny_exception_stubs[32];

void tiny_install_idt(void)
{
    for (int v = 0; v < 32; v++) {
        idt[v].offset_low = tiny_exception_stubs[v] & 0xffff;
        idt[v].offset_high = tiny_exception_stubs[v] >> 16;
        idt[v].selector = 0x08;
        idt[v].zero = 0;
        idt[v].type_attr = 0x8e; /* present, ring 0, 32-bit interrupt gate */
    }
    struct { uint16_t limit; uint32_t base; } __attribute__((packed)) desc = { sizeof(idt) - 1, (uint32_t)idt };
    __asm__ volatile("lidt %0" :: "m"(desc));
}

/* Both 8259s leave reset with every line unmasked. The guest takes no interrupts (IF stays 0), and
 * a device line left pending (the FDC raises IRQ 6 on reset and on command completion) would only
 * keep an injection pending, so mask them all. */
void tiny_mask_pic(void)
{
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
}

void tiny_exception(struct exception_frame *f)
{
    if (tiny_resume_eip) {
        tiny_last_vector = (int)f->vector;
        f->eip = tiny_resume_eip;
        tiny_resume_eip = 0;
        return;
    }
    tiny_printf("TINY-FATAL exception vector=%u error=%x eip=%08x\n", f->vector, f->error_code, f->eip);
    tiny_halt();
}

void tiny_halt(void)
{
    for (;;)
        __asm__ volatile("cli; hlt");
}

uint32_t pci_read32(unsigned bus, unsigned dev, unsigned fn, unsigned reg)
{
    outl(0xcf8, 0x80000000u | bus << 16 | dev << 11 | fn << 8 | (reg & 0xfc));
    return inl(0xcfc);
}

void pci_write32(unsigned bus, unsigned dev, unsigned fn, unsigned reg, uint32_t v)
{
    outl(0xcf8, 0x80000000u | bus << 16 | dev << 11 | fn << 8 | (reg & 0xfc));
    outl(0xcfc, v);
}

int pci_find(uint16_t vendor, uint16_t device)
{
    for (unsigned dev = 0; dev < 32; dev++)
        for (unsigned fn = 0; fn < 8; fn++)
            if (pci_read32(0, dev, fn, 0) == ((uint32_t)device << 16 | vendor))
                return (int)(dev << 3 | fn);
    return -1;
}

static void put(char c) { outb(0xe9, (uint8_t)c); }

static void put_number(uint32_t v, unsigned base, int width, char pad, int negative)
{
    char digits[12];
    int n = 0;
    do {
        digits[n++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    if (negative)
        digits[n++] = '-';
    while (width-- > n)
        put(pad);
    while (n)
        put(digits[--n]);
}

/* %s %c %d %u %x with optional zero padding and width, enough for result lines. */
void tiny_printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            put(*fmt);
            continue;
        }
        char pad = ' ';
        int width = 0;
        if (*++fmt == '0')
            pad = '0', fmt++;
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (*fmt++ - '0');
        switch (*fmt) {
        case 's': for (const char *s = va_arg(ap, const char *); *s; s++) put(*s); break;
        case 'c': put((char)va_arg(ap, int)); break;
        case 'u': put_number(va_arg(ap, uint32_t), 10, width, pad, 0); break;
        case 'x': put_number(va_arg(ap, uint32_t), 16, width, pad, 0); break;
        case 'd': {
            int v = va_arg(ap, int);
            put_number(v < 0 ? -(uint32_t)v : (uint32_t)v, 10, width, pad, v < 0);
            break;
        }
        default: put('%'); put(*fmt); break;
        }
    }
    va_end(ap);
}
