"""exec streams stdin/stdout/stderr and propagates the exit code; enter gives a real pty."""
import os
import pty
import select
import subprocess
import time

from daemon import OPENVPS


def test_exec_streams_and_propagates_exit_code(daemon):
    daemon.ok("create", "--name", "ex", "--start")
    p = daemon.cli("exec", "ex", "--", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert (p.returncode, p.stdout, p.stderr) == (7, "out\n", "err\n")
    p = daemon.cli("exec", "ex", "--", "sh", "-c", "tr a-z A-Z", input="hello from stdin\n")
    assert p.stdout == "HELLO FROM STDIN\n" and p.returncode == 0
    big = "x" * 300_000
    p = daemon.cli("exec", "ex", "--", "sh", "-c", "cat | wc -c", input=big)
    assert p.stdout.strip() == str(len(big))
    p = daemon.cli("exec", "ex", "--", "/nonexistent")
    assert p.returncode != 0
    p = daemon.cli("exec", "ex", "--", "sh", "-c", "[ -t 0 ] && echo tty || echo notty")
    assert p.stdout.strip() == "notty"
    p = daemon.cli("exec", "-t", "ex", "--", "sh", "-c", "[ -t 0 ] && echo tty || echo notty")
    assert p.stdout.strip() == "tty"   # nothing but the output: no double echo, no stray bytes


def _read_until(fd: int, needle: bytes, timeout: float = 15) -> bytes:
    """Read the terminal until needle shows; answer cursor-position queries as a terminal would."""
    buf = b""
    end = time.monotonic() + timeout
    while needle not in buf and time.monotonic() < end:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            if b"\x1b[6n" in chunk:
                os.write(fd, b"\x1b[1;1R")
    return buf


def test_enter_gives_an_interactive_shell_with_a_real_pty(daemon):
    daemon.ok("create", "--name", "shell1", "--start")
    master, slave = pty.openpty()
    import fcntl
    import struct
    import termios
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 132, 0, 0))
    proc = subprocess.Popen([OPENVPS, "enter", "shell1"], env=daemon.env, stdin=slave, stdout=slave, stderr=slave,
                            start_new_session=True, preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
    os.close(slave)
    try:
        assert b"# " in _read_until(master, b"# ")      # the prompt
        os.write(master, b"echo the-host-is-$(hostname)\n")
        assert b"the-host-is-shell1" in _read_until(master, b"the-host-is-shell1")
        os.write(master, b"tty; stty size\n")
        out = _read_until(master, b"40 132")
        assert b"/dev/pts/" in out and b"40 132" in out     # a real pty, with our window size
        os.write(master, b"exit 5\n")
        assert proc.wait(15) == 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
