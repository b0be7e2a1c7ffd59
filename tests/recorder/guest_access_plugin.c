/*
 * QEMU TCG plugin: logs the guest's own view of each device access.
 *
 * QEMU's memory_region_ops_* trace events fire after QEMU has adjusted the access to what the
 * device model implements (a 1-byte outb to ES1370 is traced as 4 bytes, an 8-byte MMIO write to
 * a 4-byte-max device as two 4-byte writes, and rtl8139's MMIO BAR is traced under its I/O-port
 * alias). This plugin writes one marker line per guest access into the same log (QEMU's -D file,
 * enabled with `-d plugin`), so the converter can pair each marker with the ops lines it caused
 * and restore the guest's own size and address:
 *
 *   iof_pio cpu N out|in b|v|v66 [low]   before a port instruction runs (b = byte; v =
 *                                    word/dword operand, v66 = with an operand-size prefix; the
 *                                    port is in a register the plugin cannot read, the ops lines
 *                                    carry it)
 *   iof_mmio cpu N w|r ADDR SIZE [low]   after an access to a non-RAM page (guest physical
 *                                    address)
 *
 * `low`: the instruction's linear address is below 1 MiB, where the BIOS and option ROMs run.
 * After Linux has taken over, that marks BIOS services the OS loader still calls (Linux's
 * real-mode setup code reads disk signatures through INT 13h for EDD, so SeaBIOS drives the
 * disk controller once more).
 *
 * Markers and trace lines only interleave correctly with `-accel tcg,thread=single`.
 * Built at record time against the qemu-plugin.h of Debian's own QEMU source (not committed).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdint.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

enum { PIO_INSN = 1, PIO_IN = 2, PIO_BYTE = 4, PIO_OPSIZE_PREFIX = 8, INSN_LOW = 16 };

#define LOW_MEMORY_END 0x100000u

static void on_port_insn(unsigned int vcpu, void *udata)
{
    uintptr_t kind = (uintptr_t)udata;
    char line[64];
    snprintf(line, sizeof line, "iof_pio cpu %u %s %s%s\n", vcpu, (kind & PIO_IN) ? "in" : "out",
             (kind & PIO_BYTE) ? "b" : ((kind & PIO_OPSIZE_PREFIX) ? "v66" : "v"),
             (kind & INSN_LOW) ? " low" : "");
    qemu_plugin_outs(line);
}

static void on_memory_access(unsigned int vcpu, qemu_plugin_meminfo_t info, uint64_t vaddr,
                             void *udata)
{
    struct qemu_plugin_hwaddr *hw = qemu_plugin_get_hwaddr(info, vaddr);
    if (!hw || !qemu_plugin_hwaddr_is_io(hw)) {
        return;
    }
    char line[96];
    snprintf(line, sizeof line, "iof_mmio cpu %u %c 0x%" PRIx64 " %u%s\n", vcpu,
             qemu_plugin_mem_is_store(info) ? 'w' : 'r', qemu_plugin_hwaddr_phys_addr(hw),
             1u << qemu_plugin_mem_size_shift(info), ((uintptr_t)udata & INSN_LOW) ? " low" : "");
    qemu_plugin_outs(line);
}

/* Returns PIO_* flags for IN/OUT/INS/OUTS, 0 for any other instruction. */
static uintptr_t classify_port_insn(const uint8_t *bytes, size_t len)
{
    uintptr_t prefix = 0;
    size_t i = 0;
    for (; i < len; i++) {
        uint8_t b = bytes[i];
        if (b == 0x66) {
            prefix |= PIO_OPSIZE_PREFIX;
        } else if (b == 0x67 || b == 0xf0 || b == 0xf2 || b == 0xf3 || b == 0x26 || b == 0x2e ||
                   b == 0x36 || b == 0x3e || b == 0x64 || b == 0x65 || (b >= 0x40 && b <= 0x4f)) {
            continue; /* address-size, lock, rep, segment, REX: no effect on the port access size */
        } else {
            break;
        }
    }
    if (i >= len) {
        return 0;
    }
    switch (bytes[i]) {
    case 0xe4: case 0xec: case 0x6c: return PIO_INSN | PIO_IN | PIO_BYTE;
    case 0xe5: case 0xed: case 0x6d: return PIO_INSN | PIO_IN | prefix;
    case 0xe6: case 0xee: case 0x6e: return PIO_INSN | PIO_BYTE;
    case 0xe7: case 0xef: case 0x6f: return PIO_INSN | prefix;
    default: return 0;
    }
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uintptr_t low = qemu_plugin_insn_vaddr(insn) < LOW_MEMORY_END ? INSN_LOW : 0;
        qemu_plugin_register_vcpu_mem_cb(insn, on_memory_access, QEMU_PLUGIN_CB_NO_REGS,
                                         QEMU_PLUGIN_MEM_RW, (void *)low);
        uintptr_t kind = classify_port_insn(qemu_plugin_insn_data(insn), qemu_plugin_insn_size(insn));
        if (kind) {
            kind |= low;
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_port_insn, QEMU_PLUGIN_CB_NO_REGS,
                                                   (void *)kind);
        }
    }
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc,
                                           char **argv)
{
    (void)info; (void)argc; (void)argv;
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    return 0;
}
