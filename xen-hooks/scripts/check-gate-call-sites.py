#!/usr/bin/python3
"""Static check: every way into Xen's x86 emulator names its emulation context.

Run on a patched Xen tree (the directory holding xen/). Fails (exit 1) and names
file:line for any call site that does not pass a context, so a future caller
cannot slip through untagged:

  * hvm_emulate_init_once(ctxt, validate, GATE, regs): GATE must be an
    X86EMUL_GATE_* constant declared in x86_emulate/gate.h (or the parameter
    `gate` of a function that itself receives one). DECODE_ONLY is only
    accepted where the context is used for decoding, never for x86_emulate().
  * hvm_emulate_one_insn(validate, GATE, descr) and handle_mmio(GATE): same.
  * x86_emulate(...) calls: HVM ones must carry an `emul-gate:` comment
    naming the context in the three lines above; PV ones (xen/arch/x86/pv/)
    are outside the HVM gate and are listed, not failed.
  * every `struct x86_emulate_ops` initialiser under hvm/ and mm/shadow/
    must set .validate (the hook the gate lives in).

--self-test TREE mutates a scratch copy (drops a context, removes a
.validate, removes an annotation) and checks each mutation is caught.
"""

import pathlib
import re
import shutil
import sys
import tempfile

DECODE_ONLY_FILES = {"xen/arch/x86/hvm/svm/emulate.c"}
GATE_VARIABLES = {"gate", "current->arch.hvm.hvm_io.mmio_gate"}


def gate_names(tree):
    header = tree / "xen/arch/x86/x86_emulate/gate.h"
    if not header.exists():
        sys.exit(f"{header}: missing - is the series applied?")
    body = re.search(r"enum x86emul_gate_ctx \{(.*?)\};", header.read_text(), re.S)
    if not body:
        sys.exit(f"{header}: no enum x86emul_gate_ctx")
    names = set(re.findall(r"\b(X86EMUL_GATE_[A-Z_]+)\b", body.group(1)))
    names.discard("X86EMUL_GATE_NR")
    return names


def strip_comments(text):
    """Blank out comments but keep offsets and newlines (for line numbers)."""
    def blank(m):
        return re.sub(r"[^\n]", " ", m.group(0))
    return re.sub(r"/\*.*?\*/|//[^\n]*", blank, text, flags=re.S)


def call_args(code, open_paren):
    """Top-level comma-separated arguments of the call whose '(' is at open_paren."""
    depth, args, cur = 0, [], []
    for i in range(open_paren, len(code)):
        ch = code[i]
        if ch == "(":
            depth += 1
            if depth == 1:
                continue
        elif ch == ")":
            depth -= 1
            if depth == 0:
                args.append("".join(cur).strip())
                return [re.sub(r"\s+", " ", a) for a in args]
        elif ch == "," and depth == 1:
            args.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    return None


def is_definition(code, start):
    """A declaration/definition has a type right before the name on its line."""
    line_start = code.rfind("\n", 0, start) + 1
    before = code[line_start:start].strip()
    return bool(re.match(r"^(static\s+)?(inline\s+)?(bool|void|int|"
                         r"bool\s+__nonnull\([0-9, ]*\))$", before))


def check(tree):
    names = gate_names(tree)
    problems, notes = [], []
    base = tree / "xen/arch/x86"
    files = sorted(p for p in base.rglob("*") if p.suffix in (".c", ".h"))
    rules = {
        "hvm_emulate_init_once": 2,
        "hvm_emulate_one_insn": 1,
        "handle_mmio": 0,
    }
    seen = {name: 0 for name in rules}
    for path in files:
        rel = str(path.relative_to(tree))
        if "/x86_emulate/" in rel:
            continue
        raw = path.read_text(errors="replace")
        code = strip_comments(raw)
        raw_lines = raw.split("\n")

        def where(pos):
            return f"{rel}:{code.count(chr(10), 0, pos) + 1}"

        for func, gate_index in rules.items():
            for m in re.finditer(r"\b%s\s*\(" % func, code):
                if is_definition(code, m.start()):
                    continue
                args = call_args(code, m.end() - 1)
                if args is None or len(args) <= gate_index:
                    problems.append(f"{where(m.start())}: {func}() call without "
                                    f"an emulation context argument")
                    continue
                seen[func] += 1
                gate = args[gate_index]
                if gate in names:
                    if gate == "X86EMUL_GATE_DECODE_ONLY" and rel not in DECODE_ONLY_FILES:
                        problems.append(f"{where(m.start())}: {func}() uses "
                                        f"X86EMUL_GATE_DECODE_ONLY outside a decode-only path")
                elif gate not in GATE_VARIABLES:
                    problems.append(f"{where(m.start())}: {func}() context argument "
                                    f"'{gate}' is not an X86EMUL_GATE_* constant")

        for m in re.finditer(r"\bx86_emulate\s*\(", code):
            if is_definition(code, m.start()):
                continue
            lineno = code.count("\n", 0, m.start()) + 1
            if "/pv/" in rel:
                notes.append(f"{rel}:{lineno}: PV x86_emulate() call (not an HVM entry "
                             f"path; has its own validate hook)")
                continue
            context = "\n".join(raw_lines[max(0, lineno - 4):lineno - 1])
            if "emul-gate:" not in context:
                problems.append(f"{rel}:{lineno}: x86_emulate() call without an "
                                f"'emul-gate:' context annotation")

        if rel.startswith(("xen/arch/x86/hvm/", "xen/arch/x86/mm/shadow/")):
            for m in re.finditer(r"struct x86_emulate_ops\s+\w+\s*=\s*\{(.*?)\};",
                                 code, re.S):
                if ".validate" not in m.group(1):
                    problems.append(f"{where(m.start())}: x86_emulate_ops initialiser "
                                    f"without .validate")

    for func, count in seen.items():
        if count == 0:
            problems.append(f"no call of {func}() found at all - did the tree layout change?")
    return problems, notes


def report(tree):
    problems, notes = check(tree)
    for n in notes:
        print("note:", n)
    for p in problems:
        print("FAIL:", p)
    print(f"{len(problems)} call-site problem(s) in {tree}")
    return 1 if problems else 0


def self_test(tree):
    mutations = [
        ("xen/arch/x86/hvm/emulate.c", "X86EMUL_GATE_RO_MMIO,", "0,"),
        ("xen/arch/x86/hvm/svm/svm.c", "is_invlpg, X86EMUL_GATE_INVLPG,", "is_invlpg,"),
        ("xen/arch/x86/hvm/vmx/vmx.c", "handle_mmio(X86EMUL_GATE_APIC)", "handle_mmio(1)"),
        ("xen/arch/x86/hvm/hvm.c", "X86EMUL_GATE_UD, regs", "X86EMUL_GATE_DECODE_ONLY, regs"),
        ("xen/arch/x86/mm/shadow/hvm.c", "    .validate   = hvm_emulate_validate,\n", ""),
        ("xen/arch/x86/mm/shadow/multi.c", "emul-gate: X86EMUL_GATE_SHADOW_PT, checked", "checked"),
    ]
    if check(tree)[0]:
        print("self-test: the unmutated tree must pass first")
        return 1
    failures = 0
    for rel, old, new in mutations:
        with tempfile.TemporaryDirectory() as tmp:
            scratch = pathlib.Path(tmp)
            shutil.copytree(tree / "xen/arch/x86", scratch / "xen/arch/x86",
                            ignore=shutil.ignore_patterns("*.o", ".*", "*.d", "*.s"))
            target = scratch / rel
            text = target.read_text()
            if old not in text:
                print(f"self-test: {rel}: mutation anchor {old!r} not found")
                failures += 1
                continue
            target.write_text(text.replace(old, new, 1))
            problems, _ = check(scratch)
            caught = any(rel in p or "no call of" in p for p in problems)
            print(f"self-test: {rel}: {old.strip()!r} -> {new.strip()!r}: "
                  f"{'caught' if caught else 'MISSED'}")
            failures += not caught
    return 1 if failures else 0


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--self-test":
        return self_test(pathlib.Path(sys.argv[2]))
    if len(sys.argv) == 2:
        return report(pathlib.Path(sys.argv[1]))
    sys.exit("usage: check-gate-call-sites.py [--self-test] XEN_TREE")


if __name__ == "__main__":
    sys.exit(main())
