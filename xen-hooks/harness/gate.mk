# Builds gate_corpus next to Xen's own test_x86_emulator, with the same
# compiler flags, objects and libc wrappers, so both use one decoder build.
# Used as: make -C tools/tests/x86_emulator -f gate.mk gate_corpus
include Makefile

gate_corpus: x86-emulate.o cpuid.o wrappers.o gate_corpus.o
	$(HOSTCC) $(HOSTCFLAGS) $(addprefix -Wl$(comma)--wrap=,$(WRAPPED)) -o $@ $^

gate_corpus.o: gate_corpus.c $(x86_emulate.h)
	$(HOSTCC) $(HOSTCFLAGS) -O2 -c -g -o $@ $<
