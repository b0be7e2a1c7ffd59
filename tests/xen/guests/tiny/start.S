/* Entry, segments and exception stubs of the tiny guest.
 * libxc starts us with flat segments but no GDT of our own; an IDT gate needs a code selector
 * that exists, so load a GDT (0x08 code, 0x10 data) before anything can fault. */
    .code32
    .section .text.start, "ax"
    .globl _start
_start:
    cli
    lgdt gdt_descriptor
    ljmp $0x08, $1f
1:  mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %ax, %fs
    mov %ax, %gs
    mov $stack_top, %esp
    call tiny_install_idt
    call tiny_mask_pic
    call tiny_main
    call tiny_halt

/* One stub per exception vector: push a dummy error code where the CPU pushes none, then the
 * vector, so the C handler sees one frame layout. */
.macro stub vec, has_error_code
    .globl tiny_exception_stub_\vec
tiny_exception_stub_\vec:
    .if \has_error_code == 0
    push $0
    .endif
    push $\vec
    jmp exception_common
.endm

    .text
    stub 0,0;  stub 1,0;  stub 2,0;  stub 3,0;  stub 4,0;  stub 5,0;  stub 6,0;  stub 7,0
    stub 8,1;  stub 9,0;  stub 10,1; stub 11,1; stub 12,1; stub 13,1; stub 14,1; stub 15,0
    stub 16,0; stub 17,1; stub 18,0; stub 19,0; stub 20,0; stub 21,1; stub 22,0; stub 23,0
    stub 24,0; stub 25,0; stub 26,0; stub 27,0; stub 28,0; stub 29,1; stub 30,1; stub 31,0

exception_common:
    pusha
    push %esp
    call tiny_exception
    add $4, %esp
    popa
    add $8, %esp
    iret

    .globl tiny_exception_stubs
    .section .rodata
    .align 4
tiny_exception_stubs:
    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .long tiny_exception_stub_\v
    .endr

    .align 8
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff    /* 0x08: flat 32-bit code */
    .quad 0x00cf92000000ffff    /* 0x10: flat data */
gdt_descriptor:
    .word gdt_descriptor - gdt - 1
    .long gdt

    .bss
    .align 16
    .space 16384
stack_top:
    .section .note.GNU-stack, "", @progbits
