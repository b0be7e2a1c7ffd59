/* Runtime of the tiny bare-metal HVM guest: port, MMIO and PCI-config access, a printf to Xen's
 * debug console (port 0xE9, shown as "(dN) ..." in Xen's log), and exceptions that a probe can
 * survive. Test programs define tiny_main(). */
#ifndef IOREQ_FILTER_TINY_H
#define IOREQ_FILTER_TINY_H

#include <stdint.h>

void tiny_main(void);
void tiny_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void tiny_halt(void) __attribute__((noreturn));

static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" :: "a"(v), "Nd"(port)); }
static inline void outw(uint16_t port, uint16_t v) { __asm__ volatile("outw %0, %1" :: "a"(v), "Nd"(port)); }
static inline void outl(uint16_t port, uint32_t v) { __asm__ volatile("outl %0, %1" :: "a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port) { uint8_t v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline uint16_t inw(uint16_t port) { uint16_t v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline uint32_t inl(uint16_t port) { uint32_t v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }

static inline uint8_t mmio_read8(uint32_t a) { return *(volatile uint8_t *)a; }
static inline uint16_t mmio_read16(uint32_t a) { return *(volatile uint16_t *)a; }
static inline uint32_t mmio_read32(uint32_t a) { return *(volatile uint32_t *)a; }
static inline void mmio_write8(uint32_t a, uint8_t v) { *(volatile uint8_t *)a = v; }
static inline void mmio_write16(uint32_t a, uint16_t v) { *(volatile uint16_t *)a = v; }
static inline void mmio_write32(uint32_t a, uint32_t v) { *(volatile uint32_t *)a = v; }

/* PCI configuration mechanism #1 (0xCF8 address, 0xCFC data). */
uint32_t pci_read32(unsigned bus, unsigned dev, unsigned fn, unsigned reg);
void pci_write32(unsigned bus, unsigned dev, unsigned fn, unsigned reg, uint32_t v);
/* First function on bus 0 with this vendor:device, as dev<<3|fn; -1 if none. */
int pci_find(uint16_t vendor, uint16_t device);

/* An exception taken while tiny_resume_eip is set resumes there and records its vector; any other
 * exception is reported and halts the guest. */
extern volatile uint32_t tiny_resume_eip;
extern volatile int tiny_last_vector;

/* TINY_TRY(insn): run one instruction (assembler text), return the vector it raised or -1. */
#define TINY_TRY(insn) ({                                               \
        tiny_last_vector = -1;                                          \
        __asm__ volatile("movl $1f, %0\n\t" insn "\n1:\n\tmovl $0, %0"  \
                         : "+m"(tiny_resume_eip) :: "memory");          \
        tiny_last_vector; })

#endif
