"""A fork server for the local demo: ``python -m goodtransfer.warm serve SOCKET`` imports torch, torchvision
and every goodtransfer module once, then forks a child per job that runs ``goodtransfer.cli.main(argv)`` with
the client's cwd, environment and stdin/stdout/stderr. Most jobs do seconds of work after ~4 CPU-seconds of
imports; a forked child starts with them done. ``python -m goodtransfer`` hands its job over when
GOODTRANSFER_WARM names the socket, and runs it itself when the server would not run the same code."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Read by the interpreter or by the preloaded libraries when they load (OpenBLAS sizes its thread pool from
# OPENBLAS_NUM_THREADS): a client must agree with the server on them. Snakemake sets the *_THREADS ones.
START_ENV_PREFIXES = ("PYTHON", "OMP_", "MKL_", "OPENBLAS_", "GOTO_", "VECLIB_", "NUMEXPR_", "KMP_", "TORCH",
                      "PYTORCH_", "MPL", "LD_")  # fmt: skip
FORWARDED = (signal.SIGTERM, signal.SIGINT)


def package_digest() -> str:
    """SHA-256 over the package's location and every file in it (sources and package data)."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256(str(root).encode())
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(f"\0{path.relative_to(root)}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def identity(environ: dict[str, str]) -> dict[str, Any]:
    """What must match for a forked child to run what a fresh ``python -m goodtransfer`` would."""
    start_env = {k: v for k, v in environ.items() if k.startswith(START_ENV_PREFIXES)}
    return {"executable": sys.executable, "sys.path": sys.path[1:], "sources": package_digest(),
            "start environment": start_env}  # fmt: skip


def _mismatch(ours: dict[str, Any], theirs: dict[str, Any]) -> str | None:
    """Why a client of identity ``theirs`` must not run in this server, or None."""
    if theirs.get("sources") != ours["sources"]:
        return "the goodtransfer package differs from the server's (another copy, or edited since it started)"
    for key in ("executable", "sys.path"):
        if theirs.get(key) != ours[key]:
            return f"its {key} differs from the server's: {theirs.get(key)} vs {ours[key]}"
    ours_env, their_env = ours["start environment"], theirs.get("start environment", {})
    if differ := sorted(k for k in ours_env.keys() | their_env.keys() if ours_env.get(k) != their_env.get(k)):
        return f"environment variables read at start-up differ from the server's: {', '.join(differ)}"
    return None


# --- client ---------------------------------------------------------------------------------------------


def _say(message: str) -> None:
    print(f"goodtransfer: warm server: {message}", file=sys.stderr, flush=True)


def _read_line(conn: socket.socket) -> str | None:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(256)
        if not chunk:
            return None
        data += chunk
    return data.decode().strip()


def client(address: str, argv: list[str]) -> int | None:
    """Run the job in the server at ``address`` and return its exit status; None (after a one-line reason
    on stderr) when the caller must run it in its own process instead."""
    request = {"identity": identity(dict(os.environ)), "argv": argv, "sys.argv": sys.argv, "cwd": os.getcwd(),
               "env": dict(os.environ), "umask": os.umask(os.umask(0)), "nice": os.nice(0),
               "affinity": sorted(os.sched_getaffinity(0))}  # fmt: skip
    payload = json.dumps(request).encode()
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(address)
        socket.send_fds(conn, [struct.pack("!I", len(payload))], [0, 1, 2])
        conn.sendall(payload)
        reply = _read_line(conn)
    except OSError as err:
        _say(f"{address}: {err.strerror or err}; running the job in this process")
        return None
    if reply is None or reply.startswith("refused"):
        reason = (reply or "refused: it closed the connection").removeprefix("refused: ")
        _say(f"{reason}; running the job in this process")
        return None

    def forward(signum: int, frame: object) -> None:  # the child is the server's, not ours: pass it on
        with contextlib.suppress(OSError):
            conn.send(bytes([signum]))

    for signum in FORWARDED:
        signal.signal(signum, forward)
    status = _read_line(conn)
    if status is None:
        _say("the server closed the connection before the job ended")
        return 1
    return int(status)


# --- server ---------------------------------------------------------------------------------------------


@dataclass
class Job:
    conn: socket.socket
    argv: list[str]
    pid: int = 0
    pidfd: int = -1
    client_gone: bool = False
    start: float = field(default_factory=time.monotonic)


def preload() -> None:
    """Import what the jobs use, so that each child starts with it imported."""
    import importlib
    import pkgutil

    import torch
    import torchvision  # noqa: F401

    import goodtransfer

    TORCH_RNG.append(torch.get_rng_state())  # as a fresh import leaves it, whatever later imports draw

    for module in pkgutil.walk_packages(goodtransfer.__path__, "goodtransfer."):
        if module.name != "goodtransfer.__main__":
            importlib.import_module(module.name)


def _unsafe_to_fork() -> str | None:
    import torch

    threads = len(os.listdir("/proc/self/task"))
    if threads > 1:
        return (
            f"{threads} threads after the imports (a library's thread pool: set OMP_NUM_THREADS=1 and "
            "OPENBLAS_NUM_THREADS=1, as Snakemake does for a one-thread job); forking them is unsafe"
        )
    if torch.cuda.is_initialized():
        return "CUDA was initialised by the imports; a forked child cannot use it"
    return None


def _read_request(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    conn.settimeout(10)  # the client sends it at once; a stuck one must not hold the loop for long
    header, fds, _, _ = socket.recv_fds(conn, 4, 3)
    (size,) = struct.unpack("!I", header)
    payload = b""
    while len(payload) < size:
        chunk = conn.recv(size - len(payload))
        if not chunk:
            raise ConnectionError("the client closed the connection mid-request")
        payload += chunk
    conn.setblocking(True)
    return json.loads(payload), fds


def _reopen_std_streams() -> None:
    """New sys.std* over the client's fds, buffered as a fresh interpreter would buffer them."""
    encoding = {"encoding": sys.stdout.encoding, "errors": sys.stdout.errors, "closefd": False}
    sys.stdin = sys.__stdin__ = open(0, encoding=sys.stdin.encoding, closefd=False)  # noqa: SIM115
    line_buffered = os.isatty(1) or sys.stdout.write_through  # python -u (write-through): closest is by line
    sys.stdout = sys.__stdout__ = open(1, "w", buffering=1 if line_buffered else -1, **encoding)  # noqa: SIM115
    sys.stderr = sys.__stderr__ = open(2, "w", buffering=1, encoding=sys.stderr.encoding,  # noqa: SIM115
                                       errors="backslashreplace", closefd=False)  # fmt: skip


def _die_with_parent() -> None:
    """SIGKILL this child if the server dies (killed, out of memory): no orphan job keeps writing."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() == 1:  # the server died before the request took effect
        os._exit(128 + signal.SIGKILL)


def _exit_code(stop: SystemExit) -> int:
    """As the interpreter maps ``sys.exit(code)``: None is 0, a non-integer is printed and gives 1."""
    if stop.code is None or isinstance(stop.code, int):
        return stop.code or 0
    print(stop.code, file=sys.stderr)
    return 1


def _child(request: dict[str, Any], fds: list[int], handlers: dict[int, Any]) -> int:
    import atexit
    import random
    import tempfile
    import traceback

    import numpy
    import torch

    from goodtransfer import cli

    for signum, handler in handlers.items():
        signal.signal(signum, handler)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    _reopen_std_streams()
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update({**request["env"], **IMPORT_ENV})
    os.umask(request["umask"])
    os.nice(max(request["nice"] - os.nice(0), 0))
    os.sched_setaffinity(0, request["affinity"])
    sys.argv, sys.path[0] = request["sys.argv"], request["cwd"]
    tempfile.tempdir = None  # cached by the server's imports; the job's TMPDIR decides
    random.seed()  # a fresh process draws fresh seeds from the OS
    numpy.random.seed()
    torch.set_rng_state(TORCH_RNG[0])
    try:
        code = cli.main(request["argv"])
    except SystemExit as stop:
        code = _exit_code(stop)
    except KeyboardInterrupt:
        traceback.print_exc()
        sys.stderr.flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # Python dies of the signal, so the shell sees 130
        os.kill(os.getpid(), signal.SIGINT)
        code = 130
    except BaseException:  # noqa: BLE001 - what the interpreter does with an uncaught exception
        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()  # os._exit skips them; a fresh process would run them
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError):
            stream.flush()
    return code


def _job_name(argv: list[str]) -> tuple[str, str]:
    """The command (downstream with its protocol) and the run (the spec's, else --name), for the log."""
    command = next((w for w in argv if not w.startswith("-") and not w.isdigit()), "?")
    options = dict(zip(argv, argv[1:], strict=False))
    try:
        spec = json.loads(options.get("--spec", "{}"))
        spec = spec if isinstance(spec, dict) else {}
    except json.JSONDecodeError:
        spec = {}
    protocol = f" {spec['protocol']}" if command == "downstream" and "protocol" in spec else ""
    return command + protocol, spec.get("run") or options.get("--name", "")


class Server:
    """One thread: a selectors loop over the listening socket, each client's connection (a stop request, or
    its end: the client died) and each child's pidfd (readable when the child exits)."""

    def __init__(self, address: str, log: Path, start_identity: dict[str, Any]) -> None:
        self.identity = start_identity
        self.log = log
        self.selector = selectors.DefaultSelector()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(address)
        self.listener.listen(64)
        self.selector.register(self.listener, selectors.EVENT_READ, "accept")
        self.jobs: list[Job] = []

    def serve(self) -> None:
        while True:
            for key, _ in self.selector.select():
                if key.data == "accept":
                    self._accept()
                elif isinstance(key.fileobj, socket.socket):
                    self._from_client(key.data)
                else:
                    self._finish(key.data)

    def _accept(self) -> None:
        conn, _ = self.listener.accept()
        fds: list[int] = []
        try:
            request, fds = _read_request(conn)
            refusal = _mismatch(self.identity, request["identity"])
            conn.sendall(f"refused: {refusal}\n".encode() if refusal else b"ok\n")
            if refusal is None:
                self._fork(Job(conn, request["argv"]), request, fds)
        except (OSError, ValueError, KeyError) as err:
            print(f"warm server: a request failed ({err}); not run", file=sys.stderr, flush=True)
            refusal = "failed"
        finally:
            for fd in fds:  # the child has its copies
                os.close(fd)
        if refusal is not None:
            conn.close()

    def _fork(self, job: Job, request: dict[str, Any], fds: list[int]) -> None:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                _die_with_parent()
                self.selector.close()
                for sock in (self.listener, *(j.conn for j in self.jobs), job.conn):
                    sock.close()
                for other in self.jobs:
                    os.close(other.pidfd)
                code = _child(request, fds, HANDLERS)
            except BaseException:  # noqa: BLE001 - a failed set-up: say why wherever stderr points now
                import traceback

                traceback.print_exc()
            finally:
                os._exit(code)
        job.pid, job.pidfd = pid, os.pidfd_open(pid)
        self.jobs.append(job)
        self.selector.register(job.conn, selectors.EVENT_READ, job)
        self.selector.register(job.pidfd, selectors.EVENT_READ, job)

    def _from_client(self, job: Job) -> None:
        try:
            data = job.conn.recv(16)
        except OSError:
            data = b""
        if not data:  # the client is gone (killed): so must its job be, before it writes anything more
            job.client_gone = True
            self.selector.unregister(job.conn)
            os.kill(job.pid, signal.SIGKILL)
        for signum in data:
            os.kill(job.pid, signum)

    def _finish(self, job: Job) -> None:
        _, status, usage = os.wait4(job.pid, 0)
        code = os.waitstatus_to_exitcode(status)
        code = 128 - code if code < 0 else code  # died of signal N: the shell's 128 + N
        command, run = _job_name(job.argv)
        cpu, wall = usage.ru_utime + usage.ru_stime, time.monotonic() - job.start
        line = {
            "command": command,
            "run": run,
            "status": code,
            "cpu_s": round(cpu, 3),
            "wall_s": round(wall, 3),
        }
        with self.log.open("a") as log:
            log.write(json.dumps(line) + "\n")
        with contextlib.suppress(OSError):  # unless the client is gone
            job.conn.sendall(f"{code}\n".encode())
        self.selector.unregister(job.pidfd)
        if not job.client_gone:
            self.selector.unregister(job.conn)
        os.close(job.pidfd)
        job.conn.close()
        self.jobs.remove(job)

    def stop(self) -> None:
        """Stop the running jobs as Snakemake would (SIGTERM: they unwind) and tell their clients."""
        for job in list(self.jobs):
            os.kill(job.pid, signal.SIGTERM)
            self._finish(job)


HANDLERS: dict[int, Any] = {}  # the signal handlers a fresh interpreter starts with, for the children
IMPORT_ENV: dict[str, str] = {}  # what the imports added to os.environ
TORCH_RNG: list[Any] = []  # torch's generator state right after `import torch`


class StopRequest(Exception):  # noqa: N818 - a request, not an error
    """SIGTERM or SIGINT to the server: stop serving (a clean exit, status 0)."""


def _stop(signum: int, frame: object) -> None:
    raise StopRequest(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m goodtransfer.warm", description=__doc__)
    parser.add_argument("action", choices=["serve"])
    parser.add_argument("socket", help="the Unix socket to listen on (GOODTRANSFER_WARM for the clients)")
    parser.add_argument("--log", type=Path, default=Path("logs/warm-server.log"), help="one line per job")
    args = parser.parse_args(argv)
    HANDLERS.update({signum: signal.getsignal(signum) for signum in FORWARDED})
    before = dict(os.environ)
    start_identity = identity(before)
    preload()
    # Imports set variables too (torch: TORCHINDUCTOR_CACHE_DIR): a fresh job's import would set them alike.
    IMPORT_ENV.update({k: v for k, v in os.environ.items() if before.get(k) != v})
    if reason := _unsafe_to_fork():
        print(f"warm server: not serving: {reason}", file=sys.stderr)
        return 1
    args.log.parent.mkdir(parents=True, exist_ok=True)
    server = Server(args.socket, args.log, start_identity)
    for signum in FORWARDED:
        signal.signal(signum, _stop)
    print(f"warm server: ready on {args.socket} (log: {args.log})", file=sys.stderr, flush=True)
    try:
        server.serve()
    except StopRequest as stop:
        print(f"warm server: stopping ({stop})", file=sys.stderr, flush=True)
    finally:
        for signum in FORWARDED:
            signal.signal(signum, signal.SIG_IGN)  # one stop is enough
        server.stop()
        os.unlink(args.socket)
    return 0


if __name__ == "__main__":
    sys.exit(main())
