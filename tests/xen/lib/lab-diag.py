#!/usr/bin/env python3
"""Diagnostics for a lab boot that stopped making progress (used by tests/xen/lab run).

  lab-diag.py hmp SOCKET COMMAND...     run each HMP command on the host QEMU's monitor socket,
                                        print "(qemu) COMMAND" and its answer
  lab-diag.py xen-keys SOCKET KEYS      type Ctrl-A three times on Xen's serial line (input to Xen),
                                        then each debug key, then Ctrl-A three times again (input back
                                        to dom0). Xen's answers go to the serial log as usual.

Both talk to UNIX sockets that QEMU serves (-monitor unix:..., -chardev socket,...); every step has a
time limit, so a wedged QEMU cannot hang the runner.
"""
import socket
import sys
import time

PROMPT = b"(qemu) "


def connect(path, timeout):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    return s


def read_until_prompt(s, deadline):
    data = b""
    while not data.endswith(PROMPT) and time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        data += chunk
    return data


def hmp(path, commands):
    s = connect(path, 5)
    read_until_prompt(s, time.monotonic() + 5)  # banner
    for command in commands:
        s.sendall(command.encode() + b"\n")
        answer = read_until_prompt(s, time.monotonic() + 20)
        text = answer.decode(errors="replace").replace("\r", "")
        if text.endswith(PROMPT.decode()):
            text = text[: -len(PROMPT)]
        # The monitor echoes the command line first (redrawn with terminal escapes): drop it.
        body = text.split("\n", 1)[1] if "\n" in text else ""
        sys.stdout.write("(qemu) %s\n%s\n" % (command, body.rstrip("\n")))
    s.close()


def drain(s, seconds):
    """Read (and drop: QEMU also logs it to the serial log) whatever the guest prints meanwhile,
    so QEMU's serial backend never blocks on a full socket."""
    end = time.monotonic() + seconds
    s.settimeout(0.2)
    while time.monotonic() < end:
        try:
            if not s.recv(65536):
                return
        except socket.timeout:
            pass


def xen_keys(path, keys):
    s = connect(path, 5)
    ctrl_a = b"\x01"
    for _ in range(3):
        s.sendall(ctrl_a)
        drain(s, 0.3)
    drain(s, 1)
    for key in keys:
        s.sendall(key.encode())
        drain(s, 3)  # some dumps ('q', 'e') are long at 115200 baud
    for _ in range(3):
        s.sendall(ctrl_a)
        drain(s, 0.3)
    drain(s, 1)
    s.close()


def main(argv):
    if len(argv) >= 3 and argv[0] == "hmp":
        hmp(argv[1], argv[2:])
    elif len(argv) == 3 and argv[0] == "xen-keys":
        xen_keys(argv[1], argv[2])
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except OSError as e:
        sys.stderr.write("lab-diag.py: %s\n" % e)
        sys.exit(1)
