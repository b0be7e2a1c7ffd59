/* Tiny HVM guest for the emulation gate on the real, patched hypervisor (SVM under QEMU TCG).
 * Each probe makes Xen's emulator run one instruction in a context it can reach and prints
 * "TINY gate-<probe>=<vector|ok>":
 *   needed by its context (must work with the gate enforcing):
 *     lapic-mov-read / lapic-mov-write   MOV to/from the local APIC page (MMIO context on SVM)
 *     hpet-movzx                         MOVZX from Xen's HPET (MMIO)
 *     string-outsb                       REP OUTSB to Xen's debug port 0xE9 (string-pio)
 *     cr0-write                          MOV to CR0 (cr-access: TCG's SVM has no decode assist)
 *   not needed (must raise #UD = 6 with the gate enforcing, and not without it):
 *     mmio-sgdt      SGDT whose operand is on the LAPIC page (emulated in MMIO context)
 *     mmio-lgdt      LGDT from the LAPIC page; without the gate Xen loads the guest's GDTR from
 *                    device registers (gate-lgdt-limit shows what it got)
 *     mmio-ljmp      far JMP through a pointer on the LAPIC page (XSA-110 class)
 *     mmio-bts-reg   BTS with a register bit offset on the LAPIC page (XSA-195 class)
 *     fep-mov        an ordinary MOV forced through the hvm_fep prefix (#UD-intercept context)
 * The guest then prints GATE-PROBE-DONE and spins so dom0 can read the denial counters. */
#include "tiny.h"

/* TINY_TRY with operands: GATE_TRY("insn", : inputs : clobbers). */
#define GATE_TRY(insn, ...) ({                                          \
        tiny_last_vector = -1;                                          \
        __asm__ volatile("movl $1f, %0\n\t" insn "\n1:\n\tmovl $0, %0" \
                         : "+m"(tiny_resume_eip) __VA_ARGS__);          \
        tiny_last_vector; })

struct __attribute__((packed)) dtr {
    uint16_t limit;
    uint32_t base;
};

static void report(const char *probe, int vector)
{
    if (vector < 0)
        tiny_printf("TINY gate-%s=ok\n", probe);
    else
        tiny_printf("TINY gate-%s=%d\n", probe, vector);
}

void tiny_main(void)
{
    struct dtr saved, after;
    int v;

    tiny_printf("TINY gate-probe start\n");

    v = GATE_TRY("movl 0xfee00030, %%eax", :: "eax", "memory");
    report("lapic-mov-read", v);
    v = GATE_TRY("movl $0, %%eax; movl %%eax, 0xfee00080", :: "eax", "memory");
    report("lapic-mov-write", v);
    v = GATE_TRY("movzwl 0xfed00002, %%eax", :: "eax", "memory");
    report("hpet-movzx", v);
    {
        static const char msg[] = "gate-outsb\n";
        v = GATE_TRY("movl %1, %%esi; movl %2, %%ecx; movw $0xe9, %%dx; rep outsb",
                     : "r"(msg), "r"(sizeof(msg) - 1) : "esi", "ecx", "edx", "memory");
        report("string-outsb", v);
    }
    v = GATE_TRY("movl %%cr0, %%eax; movl %%eax, %%cr0", :: "eax", "memory");
    report("cr0-write", v);

    __asm__ volatile("sgdt %0" : "=m"(saved));
    v = GATE_TRY("sgdt 0xfee00000", :: "memory");
    report("mmio-sgdt", v);
    v = GATE_TRY("lgdt 0xfee00000", :: "memory");
    __asm__ volatile("sgdt %0" : "=m"(after));
    __asm__ volatile("lgdt %0" :: "m"(saved));
    report("mmio-lgdt", v);
    tiny_printf("TINY gate-lgdt-changed-gdtr=%d\n",
                after.limit != saved.limit || after.base != saved.base);
    v = GATE_TRY("ljmp *0xfee00000", :: "memory");
    report("mmio-ljmp", v);
    v = GATE_TRY("movl $0, %%ecx; btsl %%ecx, 0xfee00000", :: "ecx", "memory");
    report("mmio-bts-reg", v);
    v = GATE_TRY("ud2; .ascii \"xen\"; movl (%%esp), %%eax", :: "eax", "memory");
    report("fep-mov", v);

    tiny_printf("GATE-PROBE-DONE\n");
    for (;;)
        __asm__ volatile("pause");
}
