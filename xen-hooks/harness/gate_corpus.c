/*
 * gate_corpus: runs instruction corpora through Xen's own x86_emulate() with
 * the emulation context gate wired into the validate hook, exactly as the
 * patched hypervisor wires it (x86emul_gate_check() from the patched tree's
 * xen/arch/x86/x86_emulate/gate.c).
 *
 * Built inside the patched tree's tools/tests/x86_emulator (see gate.mk) and
 * linked with that directory's x86-emulate.o, so the decoder is Xen's.
 *
 *   gate_corpus exploits CORPUS [--markdown OUT]
 *       every instruction x every context x every CPU profile; checks the
 *       class each instruction decodes to, that the emulator's outcome
 *       (#UD or emulated) matches the table, and that the contexts allowing
 *       it on QEMU TCG's SVM are exactly the ones the corpus lists.
 *   gate_corpus legit CORPUS CONTEXT PROFILE
 *       counts denials (must be 0) and prints every denied instruction.
 *   gate_corpus bench CORPUS CONTEXT PROFILE
 *       cycles per x86emul_gate_check() call, measured from the hook.
 *
 * Corpus lines: "id | mode | hex bytes | class | contexts | text", mode one
 * of r16 (real mode), p32, l64; contexts a comma list or "-" (legit corpora
 * use "-" for class and contexts).  '#' starts a comment line.
 *
 * Follows Xen's CODING_STYLE, as the rest of that directory.
 */

#include "x86-emulate.h"

#include <errno.h>
#include <stdarg.h>

#define MAX_INSNS 200000

struct corpus_insn {
    char id[64];
    unsigned int mode;            /* 16, 32, 64 */
    uint8_t bytes[16];
    unsigned int len;
    int cls;                      /* expected class, -1 if not given */
    int has_allowed;
    uint32_t allowed_ctx;         /* expected contexts allowing it (TCG SVM) */
    char text[96];
    unsigned int line;
};

struct cpu_profile {
    const char *name;
    const char *desc;
    struct x86emul_gate_cpu cpu;
};

static const struct cpu_profile profiles[] = {
    { "svm-tcg",
      "AMD SVM with NPT, no decode assists, no NRIP save (QEMU TCG's SVM)",
      { .amd = true, .hap = true } },
    { "svm",
      "AMD SVM with NPT, decode assists and NRIP save (Zen hardware)",
      { .amd = true, .hap = true, .decode_assist = true,
        .nrip_save = true } },
    { "vmx-ug",
      "Intel VMX with EPT and unrestricted guest",
      { .hap = true, .unrestricted_guest = true } },
    { "vmx-noug",
      "Intel VMX with EPT, no unrestricted guest (pre-Westmere)",
      { .hap = true } },
    { "svm-shadow",
      "AMD SVM, shadow paging (hap=0), no decode assists",
      { .amd = true } },
};

static struct corpus_insn *insns;
static unsigned int nr_insns;

/* Hook state. */
static enum x86emul_gate_ctx hook_ctx;
static const struct x86emul_gate_cpu *hook_cpu;
static int hook_cls;
static unsigned int bench_iters;
static uint64_t bench_cycles;

static uint8_t code_buf[64];
#define CODE_BASE 0x1000UL

static void die(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    exit(2);
}

static int find_ctx(const char *name)
{
    unsigned int i;

    for ( i = 0; i < X86EMUL_GATE_NR; i++ )
        if ( !strcmp(name, x86emul_gate_ctx_names[i]) )
            return i;
    return -1;
}

static int find_class(const char *name)
{
    unsigned int i;

    for ( i = 0; i < X86EMUL_GC_NR; i++ )
        if ( !strcmp(name, x86emul_gate_class_names[i]) )
            return i;
    return -1;
}

static const struct cpu_profile *find_profile(const char *name)
{
    unsigned int i;

    for ( i = 0; i < ARRAY_SIZE(profiles); i++ )
        if ( !strcmp(name, profiles[i].name) )
            return &profiles[i];
    die("unknown CPU profile '%s'\n", name);
    return NULL;
}

static char *trim(char *s)
{
    char *e;

    while ( *s == ' ' || *s == '\t' )
        s++;
    e = s + strlen(s);
    while ( e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' ||
                      e[-1] == '\r') )
        *--e = '\0';
    return s;
}

static void load_corpus(const char *path)
{
    FILE *f = fopen(path, "r");
    char line[512];
    unsigned int lineno = 0;

    if ( !f )
        die("%s: cannot open: %s\n", path, strerror(errno));

    insns = calloc(MAX_INSNS, sizeof(*insns));
    if ( !insns )
        die("out of memory\n");

    while ( fgets(line, sizeof(line), f) )
    {
        char *field[6], *p = line, *tok;
        struct corpus_insn *in;
        unsigned int n = 0;

        lineno++;
        if ( *trim(line) == '\0' || *trim(line) == '#' )
            continue;

        while ( n < 6 && (tok = strsep(&p, "|")) != NULL )
            field[n++] = trim(tok);
        if ( n < 6 )
            die("%s:%u: expected 6 '|'-separated fields, found %u\n",
                path, lineno, n);
        if ( nr_insns == MAX_INSNS )
            die("%s:%u: more than %u instructions\n", path, lineno,
                MAX_INSNS);

        in = &insns[nr_insns++];
        in->line = lineno;
        snprintf(in->id, sizeof(in->id), "%s", field[0]);
        snprintf(in->text, sizeof(in->text), "%s", field[5]);

        if ( !strcmp(field[1], "r16") )
            in->mode = 16;
        else if ( !strcmp(field[1], "p32") )
            in->mode = 32;
        else if ( !strcmp(field[1], "l64") )
            in->mode = 64;
        else
            die("%s:%u: mode '%s' is not r16, p32 or l64\n",
                path, lineno, field[1]);

        for ( tok = strtok(field[2], " "); tok; tok = strtok(NULL, " ") )
        {
            char *end;
            unsigned long v = strtoul(tok, &end, 16);

            if ( *end || end == tok || v > 0xff )
                die("%s:%u: '%s' is not a hex byte\n", path, lineno, tok);
            if ( in->len == sizeof(in->bytes) )
                die("%s:%u: more than 15 bytes\n", path, lineno);
            in->bytes[in->len++] = v;
        }
        if ( !in->len || in->len > 15 )
            die("%s:%u: instruction must have 1..15 bytes\n", path, lineno);

        in->cls = -1;
        if ( strcmp(field[3], "-") )
        {
            in->cls = find_class(field[3]);
            if ( in->cls < 0 )
                die("%s:%u: unknown class '%s'\n", path, lineno, field[3]);
        }

        if ( strcmp(field[4], "-") )
        {
            in->has_allowed = 1;
            if ( strcmp(field[4], "none") )
                for ( tok = strtok(field[4], ","); tok;
                      tok = strtok(NULL, ",") )
                {
                    int c = find_ctx(trim(tok));

                    if ( c < 0 )
                        die("%s:%u: unknown context '%s'\n", path, lineno,
                            tok);
                    in->allowed_ctx |= 1u << c;
                }
        }
    }

    fclose(f);
    if ( !nr_insns )
        die("%s: no instructions\n", path);
}

static int runner_fetch(unsigned long offset, void *p_data,
                        unsigned int bytes, struct x86_emulate_ctxt *ctxt)
{
    if ( offset < CODE_BASE || offset - CODE_BASE + bytes > sizeof(code_buf) )
        return X86EMUL_UNHANDLEABLE;
    memcpy(p_data, code_buf + (offset - CODE_BASE), bytes);
    return X86EMUL_OKAY;
}

static int runner_read(enum x86_segment seg, unsigned long offset,
                       void *p_data, unsigned int bytes,
                       struct x86_emulate_ctxt *ctxt)
{
    return X86EMUL_UNHANDLEABLE;
}

static unsigned int cur_mode;

static int runner_read_cr(unsigned int reg, unsigned long *val,
                          struct x86_emulate_ctxt *ctxt)
{
    switch ( reg )
    {
    case 0:
        *val = cur_mode == 16 ? 0x10 : 0x80000011; /* PE (and PG) */
        return X86EMUL_OKAY;
    case 4:
        *val = cur_mode == 64 ? 0x6a0 /* PAE|OSFXSR|OSXMMEXCPT */ : 0x600;
        return X86EMUL_OKAY;
    }
    return emul_test_read_cr(reg, val, ctxt);
}

static int runner_validate(const struct x86_emulate_state *state,
                           struct x86_emulate_ctxt *ctxt)
{
    unsigned int cls, i;
    bool ok = x86emul_gate_check(state, ctxt, hook_ctx, hook_cpu, &cls);

    hook_cls = cls;

    if ( bench_iters )
    {
        uint64_t best = ~0ULL;
        unsigned int r;

        /* Best of several rounds: the check itself, not interrupts. */
        for ( r = 0; r < 16; r++ )
        {
            uint64_t t0, t1;
            volatile bool sink;

            t0 = __builtin_ia32_rdtsc();
            for ( i = 0; i < bench_iters; i++ )
                sink = x86emul_gate_check(state, ctxt, hook_ctx, hook_cpu,
                                          NULL);
            t1 = __builtin_ia32_rdtsc();
            (void)sink;
            if ( t1 - t0 < best )
                best = t1 - t0;
        }
        bench_cycles += best;
    }

    if ( ok )
        return X86EMUL_DONE; /* stop here: the verdict is all we need */

    x86_emul_hw_exception(6 /* #UD */, X86_EVENT_NO_EC, ctxt);
    return X86EMUL_EXCEPTION;
}

static struct x86_emulate_ops runner_ops = {
    .read       = runner_read,
    .insn_fetch = runner_fetch,
    .read_cr    = runner_read_cr,
    .cpuid      = emul_test_cpuid,
    .read_xcr   = emul_test_read_xcr,
    .validate   = runner_validate,
};

enum verdict { V_ALLOWED, V_DENIED, V_ERROR };

static enum verdict run_one(const struct corpus_insn *in,
                            enum x86emul_gate_ctx ctx,
                            const struct x86emul_gate_cpu *cpu, int *cls)
{
    struct x86_emulate_ctxt ctxt = {};
    struct cpu_user_regs regs = {};
    int rc;

    memset(code_buf, 0x90, sizeof(code_buf));
    memcpy(code_buf, in->bytes, in->len);
    cur_mode = in->mode;

    regs.rip = CODE_BASE;
    regs.eflags = X86_EFLAGS_MBS;
    regs.rsp = 0x8000;
    ctxt.regs = &regs;
    ctxt.cpu_policy = &cp;
    ctxt.lma = in->mode == 64;
    ctxt.addr_size = ctxt.sp_size = in->mode;

    hook_ctx = ctx;
    hook_cpu = cpu;
    hook_cls = -1;

    rc = x86_emulate(&ctxt, &runner_ops);
    *cls = hook_cls;

    if ( hook_cls < 0 )
        return V_ERROR; /* never reached the validate hook */
    if ( rc == X86EMUL_OKAY )
        return V_ALLOWED;
    if ( rc == X86EMUL_EXCEPTION && ctxt.event_pending &&
         ctxt.event.vector == 6 )
        return V_DENIED;
    return V_ERROR;
}

static const char *mode_name(unsigned int mode)
{
    return mode == 16 ? "r16" : mode == 32 ? "p32" : "l64";
}

static int cmd_exploits(const char *md_path)
{
    unsigned int i, p, c, failures = 0, checks = 0;
    FILE *md = NULL;
    char tmp_path[4096];

    if ( md_path )
    {
        snprintf(tmp_path, sizeof(tmp_path), "%s.tmp", md_path);
        md = fopen(tmp_path, "w");
        if ( !md )
            die("%s: cannot write: %s\n", tmp_path, strerror(errno));
    }

    for ( p = 0; p < ARRAY_SIZE(profiles); p++ )
    {
        const struct cpu_profile *prof = &profiles[p];

        if ( md )
        {
            fprintf(md, "\n### CPU profile `%s`: %s\n\n", prof->name,
                    prof->desc);
            fprintf(md, "| instruction | class |");
            for ( c = 1; c < X86EMUL_GATE_NR; c++ )
                fprintf(md, " %s |", x86emul_gate_ctx_names[c]);
            fprintf(md, "\n|---|---|");
            for ( c = 1; c < X86EMUL_GATE_NR; c++ )
                fprintf(md, ":-:|");
            fprintf(md, "\n");
        }

        for ( i = 0; i < nr_insns; i++ )
        {
            const struct corpus_insn *in = &insns[i];
            uint32_t allowed_seen = 0;
            int first_cls = -1;

            if ( md )
                fprintf(md, "| %s: `%s` (%s) |", in->id, in->text,
                        mode_name(in->mode));

            for ( c = 0; c < X86EMUL_GATE_NR; c++ )
            {
                int cls;
                enum verdict v = run_one(in, c, &prof->cpu, &cls);
                bool table_allows;

                checks++;
                if ( v == V_ERROR )
                {
                    printf("FAIL %s (line %u) [%s/%s]: emulator did not "
                           "reach the gate or returned an unexpected "
                           "result\n", in->id, in->line, prof->name,
                           x86emul_gate_ctx_names[c]);
                    failures++;
                    continue;
                }
                if ( first_cls < 0 )
                {
                    first_cls = cls;
                    if ( md )
                        fprintf(md, " %s |", x86emul_gate_class_names[cls]);
                }
                else if ( cls != first_cls )
                {
                    printf("FAIL %s: class differs between contexts\n",
                           in->id);
                    failures++;
                }

                table_allows = x86emul_gate_allowed(c, &prof->cpu) &
                               (1ULL << cls);
                if ( (v == V_ALLOWED) != table_allows )
                {
                    printf("FAIL %s [%s/%s]: emulator %s but table %s\n",
                           in->id, prof->name, x86emul_gate_ctx_names[c],
                           v == V_ALLOWED ? "emulated" : "raised #UD",
                           table_allows ? "allows" : "denies");
                    failures++;
                }
                if ( v == V_ALLOWED )
                    allowed_seen |= 1u << c;
                if ( md && c )
                    fprintf(md, " %s |", v == V_ALLOWED ? "allow" : "**#UD**");
            }
            if ( md )
                fprintf(md, "\n");

            if ( in->cls >= 0 && first_cls >= 0 && in->cls != first_cls )
            {
                printf("FAIL %s (line %u): decodes to class %s, corpus "
                       "says %s\n", in->id, in->line,
                       x86emul_gate_class_names[first_cls],
                       x86emul_gate_class_names[in->cls]);
                failures++;
            }
            if ( !p && in->has_allowed && allowed_seen != in->allowed_ctx )
            {
                printf("FAIL %s (line %u) [%s]: allowed in {", in->id,
                       in->line, prof->name);
                for ( c = 0; c < X86EMUL_GATE_NR; c++ )
                    if ( allowed_seen & (1u << c) )
                        printf(" %s", x86emul_gate_ctx_names[c]);
                printf(" }, corpus expects {");
                for ( c = 0; c < X86EMUL_GATE_NR; c++ )
                    if ( in->allowed_ctx & (1u << c) )
                        printf(" %s", x86emul_gate_ctx_names[c]);
                printf(" }\n");
                failures++;
            }
            if ( !p )
            {
                printf("%-28s %-5s %-16s denied in", in->id,
                       mode_name(in->mode),
                       first_cls >= 0 ? x86emul_gate_class_names[first_cls]
                                      : "?");
                for ( c = 0; c < X86EMUL_GATE_NR; c++ )
                    if ( !(allowed_seen & (1u << c)) )
                        printf(" %s", x86emul_gate_ctx_names[c]);
                printf("\n");
            }
        }
    }

    if ( md )
    {
        if ( fclose(md) || rename(tmp_path, md_path) )
            die("%s: cannot write: %s\n", md_path, strerror(errno));
    }

    printf("exploit corpus: %u instructions, %u emulator runs, %u failures\n",
           nr_insns, checks, failures);
    return failures ? 1 : 0;
}

static int cmd_legit(const char *ctx_name, const char *prof_name)
{
    const struct cpu_profile *prof = find_profile(prof_name);
    int ctx = find_ctx(ctx_name);
    unsigned long per_class[X86EMUL_GC_NR] = {};
    unsigned int i, c, denied = 0, errors = 0;

    if ( ctx < 0 )
        die("unknown context '%s'\n", ctx_name);

    for ( i = 0; i < nr_insns; i++ )
    {
        const struct corpus_insn *in = &insns[i];
        int cls;
        enum verdict v = run_one(in, ctx, &prof->cpu, &cls);

        if ( v == V_ERROR )
        {
            /*
             * Not decodable by Xen in this mode (e.g. a VEX form in real
             * mode that the scanner misread): never reaches any gate, so
             * it is reported but is not a denial.
             */
            printf("undecodable %s (line %u): %s\n", in->id, in->line,
                   in->text);
            errors++;
            continue;
        }
        per_class[cls]++;
        if ( v == V_DENIED )
        {
            printf("DENIED %s (line %u) %s: class %s\n", in->id, in->line,
                   in->text, x86emul_gate_class_names[cls]);
            denied++;
        }
    }

    printf("legitimate corpus in %s context (%s): %u instructions, "
           "%u denied, %u not decodable by Xen\n", ctx_name, prof_name,
           nr_insns, denied, errors);
    for ( c = 0; c < X86EMUL_GC_NR; c++ )
        if ( per_class[c] )
            printf("  %-16s %lu\n", x86emul_gate_class_names[c],
                   per_class[c]);

    return denied ? 1 : 0;
}

static int cmd_bench(const char *ctx_name, const char *prof_name)
{
    const struct cpu_profile *prof = find_profile(prof_name);
    int ctx = find_ctx(ctx_name);
    unsigned int i, measured = 0;
    uint64_t total = 0;

    if ( ctx < 0 )
        die("unknown context '%s'\n", ctx_name);

    bench_iters = 1000;
    for ( i = 0; i < nr_insns; i++ )
    {
        int cls;

        bench_cycles = 0;
        if ( run_one(&insns[i], ctx, &prof->cpu, &cls) == V_ERROR )
            continue;
        total += bench_cycles;
        measured++;
    }

    if ( !measured )
        die("no instruction reached the gate\n");

    /*
     * Integer arithmetic on purpose: the harness links Xen's libc wrappers
     * (--wrap=printf), which do not pass floating-point varargs through.
     */
    total = total * 10 / ((uint64_t)measured * bench_iters);
    printf("gate check: %u instructions, %lu.%lu TSC cycles per call "
           "(best of 16 rounds of %u calls each, averaged over "
           "instructions)\n", measured, (unsigned long)(total / 10),
           (unsigned long)(total % 10), bench_iters);
    return 0;
}

int main(int argc, char **argv)
{
    if ( !emul_test_init() )
        fprintf(stderr, "note: stack not executable (not needed here)\n");

    if ( argc >= 3 && !strcmp(argv[1], "exploits") )
    {
        load_corpus(argv[2]);
        if ( argc == 5 && !strcmp(argv[3], "--markdown") )
            return cmd_exploits(argv[4]);
        if ( argc == 3 )
            return cmd_exploits(NULL);
    }
    else if ( argc == 5 && !strcmp(argv[1], "legit") )
    {
        load_corpus(argv[2]);
        return cmd_legit(argv[3], argv[4]);
    }
    else if ( argc == 5 && !strcmp(argv[1], "bench") )
    {
        load_corpus(argv[2]);
        return cmd_bench(argv[3], argv[4]);
    }

    fprintf(stderr,
            "usage: %s exploits CORPUS [--markdown OUT]\n"
            "       %s legit CORPUS CONTEXT PROFILE\n"
            "       %s bench CORPUS CONTEXT PROFILE\n",
            argv[0], argv[0], argv[0]);
    return 2;
}
