"""Stage launcher: a stage script's first call hands its run to a resident process
that has the heavy third-party packages (torch, sklearn, matplotlib, dvclive, ...)
imported already, instead of importing them again in every stage of `dvc repro`.

The resident process (zygote_server.py, started on first use, detached, ending
after IDLE_SECONDS without work) forks a child per run that takes this process's
stdin/stdout/stderr, cwd, environment, argv, sys.path, umask and signal
dispositions and runs the script as `__main__`; this process waits, forwards
SIGINT/SIGTERM/SIGHUP/SIGQUIT to the child's process group and exits with the
child's status (or dies of the child's signal). Project code is never preloaded:
the child imports transferlab from disk like a fresh interpreter.

A server is only shared by clients that would import the same packages the same
way: its socket is named by a hash of the interpreter, its flags, the server's
code, the installed distributions and the environment variables the preloaded
libraries read on import. Without a usable server the script simply runs here.

    TRANSFERLAB_ZYGOTE=0        run every stage in its own process as before
    TRANSFERLAB_ZYGOTE_DIR      folder of the sockets (default /tmp/transferlab-zygote-UID)
    TRANSFERLAB_ZYGOTE_IDLE     seconds an idle server lives (default 45)

Kept light on purpose (standard library only, ~10 ms): it runs before every stage's
own imports.
"""

from __future__ import annotations

import os
import sys

ENABLE_ENV = "TRANSFERLAB_ZYGOTE"
DIR_ENV = "TRANSFERLAB_ZYGOTE_DIR"
IDLE_ENV = "TRANSFERLAB_ZYGOTE_IDLE"
IDLE_SECONDS = 45.0
SERVER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "zygote_server.py")
# The name the server registers itself under; present only in the server and its children.
SERVER_MODULE = "_transferlab_zygote_server"
# Environment variables read on import by the interpreter or the preloaded packages
# (BLAS/OpenMP, CUDA, torch and its compilers, numpy/scipy/sklearn/joblib, matplotlib,
# locale, time zone, temporary and config folders). PYTHONPATH is not among them: the
# server checks per request that the client's sys.path finds the preloaded packages
# where it found them.
KEYED_PREFIXES = (
    "OMP_", "MKL_", "KMP_", "GOMP_", "OPENBLAS_", "GOTO", "BLIS_", "NPY_", "NUMPY_",
    "SCIPY_", "SKLEARN_", "JOBLIB_", "LOKY_", "CUDA", "NVIDIA_", "CUBLAS", "CUDNN",
    "NCCL_", "PYTORCH_", "TORCH", "TRITON_", "MPL", "MATPLOTLIB", "LD_", "LC_", "LANG",
    "TZ", "TMP", "TEMP", "HOME", "XDG_", "DISPLAY", "WAYLAND_DISPLAY", "PYTHON", "USER",
    "LOGNAME",
)
FORWARDED_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT")
START_WAIT_SECONDS = 3.0


class _NotServed(Exception):
    """No server ran the script; this process runs it itself."""


def handoff(started: float, wait: bool = True, patience: float | None = None) -> float:
    """Run the calling script (a stage's `__main__`) in a fork of the resident server and
    exit with its status; return at once, to run it here, when disabled, under
    torchrun, not the interpreter's main script, or when no server can take it.

    `started` is the script's start time; the return value is the start time of the
    process the user started (in the server's child: the client's), for the stage's
    timing record. `wait=False` (a light script that comes first, like validate): when
    no server is up, start one for the scripts after this one and run here.
    `patience` (a light script, one that needs none of the heavy packages): when the
    server does not take the run within this many seconds (it is importing torch,
    say), run here; it never starts the script once the client has given up."""
    server = sys.modules.get(SERVER_MODULE)
    if server is not None:  # this is the server's child running the script
        return getattr(server, "CLIENT_STARTED", None) or started
    if os.environ.get(ENABLE_ENV, "1").strip() == "0":
        return started
    if os.environ.get("TRANSFERLAB_TORCHRUN", "").strip() or (
            "WORLD_SIZE" in os.environ and "RANK" in os.environ):
        return started
    if "importtime" in sys._xoptions:
        return started  # whoever asked to see the imports wants them here
    caller = sys._getframe(1).f_globals
    script = caller.get("__file__")
    if not script or not _is_main_script(script, caller):
        return started  # imported, or run inside another program (runpy, cProfile)
    try:
        reply = _run_in_server(script, started, wait, patience)
    except _NotServed:
        return started
    _exit_as(reply)


def _is_main_script(script: str, caller: dict) -> bool:
    """True when the interpreter itself was started on `script` (`python script ...`) and
    runs it as its `__main__` module."""
    main = sys.modules.get("__main__")
    if caller.get("__name__") != "__main__" or getattr(main, "__dict__", None) is not caller:
        return False
    orig = getattr(sys, "orig_argv", [])
    n = len(sys.argv)
    return 0 < n < len(orig) and os.path.abspath(orig[-n]) == os.path.abspath(script)


def socket_dir() -> str:
    base = os.environ.get(DIR_ENV) or os.path.join("/tmp", f"transferlab-zygote-{os.getuid()}")
    os.makedirs(base, mode=0o700, exist_ok=True)
    st = os.stat(base)
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        # Another user's folder, or one others can write: never hand a run to its socket.
        raise _NotServed(f"{base} is not private to this user")
    return base


def server_key() -> str:
    """What a preloaded module depends on, hashed: clients differing in any of it get
    different servers."""
    import hashlib
    import resource

    h = hashlib.sha256()

    def add(value) -> None:
        h.update(repr(value).encode())
        h.update(b"\0")

    add((sys.executable, sys.version, tuple(sys.flags), sys._xoptions, sys.warnoptions))
    with open(SERVER_SCRIPT, "rb") as fh:
        add(fh.read())
    # Installed distributions (a new version or a reinstall changes the name or mtime);
    # folders holding none (the project's src/) leave the key alone.
    for entry in sys.path[1:]:
        try:
            with os.scandir(entry or ".") as it:
                found = sorted((d.name, d.stat().st_mtime_ns) for d in it
                               if d.name.endswith((".dist-info", ".egg-info", ".pth")))
        except OSError:
            continue
        if found:
            add((entry, found))
    add(sorted((k, v) for k, v in os.environ.items()
               if k.startswith(KEYED_PREFIXES) and k != "PYTHONPATH"))
    add((os.getuid(), os.getpriority(os.PRIO_PROCESS, 0), sorted(os.sched_getaffinity(0))))
    add([resource.getrlimit(getattr(resource, name)) for name in sorted(dir(resource))
         if name.startswith("RLIMIT_")])
    try:  # matplotlib reads ./matplotlibrc on import
        with open("matplotlibrc", "rb") as fh:
            add(fh.read())
    except OSError:
        add(None)
    return h.hexdigest()[:24]


def _connect(path: str):
    import socket

    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError:
        conn.close()
        return None
    return conn


def start_server(directory: str, key: str) -> None:
    """Start this key's server detached: its own session, nothing of this process's
    descriptors (a test's or DVC's pipes would stay open while it lives)."""
    import subprocess

    log_path = os.path.join(directory, f"{key}.log")
    try:
        if os.path.getsize(log_path) > 1 << 20:
            os.truncate(log_path, 0)
    except OSError:
        pass
    idle = os.environ.get(IDLE_ENV, "").strip() or str(IDLE_SECONDS)
    with open(log_path, "ab") as log:
        subprocess.Popen(
            [sys.executable, *subprocess._args_from_interpreter_flags(), SERVER_SCRIPT,
             os.path.join(directory, f"{key}.sock"), os.path.join(directory, f"{key}.lock"),
             idle],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, close_fds=True,
            start_new_session=True)


def _server_connection(wait: bool):
    directory = socket_dir()
    key = server_key()
    path = os.path.join(directory, f"{key}.sock")
    conn = _connect(path)
    if conn is not None:
        return conn
    import time

    # A new server listens at once and serves between its imports; waiting for its
    # socket costs a Python start-up, running here would cost every import.
    start_server(directory, key)
    if not wait:
        raise _NotServed("started a server for the next scripts")
    deadline = time.monotonic() + START_WAIT_SECONDS
    while time.monotonic() < deadline:
        time.sleep(0.01)
        conn = _connect(path)
        if conn is not None:
            return conn
    raise _NotServed("no server came up")


def _request(script: str, started: float) -> dict:
    import signal

    umask = os.umask(0)
    os.umask(umask)
    dispositions = {}
    for number in signal.valid_signals():
        try:
            handler = signal.getsignal(number)
        except (OSError, ValueError):
            continue
        if handler is signal.SIG_IGN:
            dispositions[str(int(number))] = "ignore"
        elif handler is signal.default_int_handler:
            dispositions[str(int(number))] = "interrupt"
    return {"file": script, "started": started, "argv": sys.argv, "orig_argv": sys.orig_argv,
            "cwd": os.getcwd(), "env": dict(os.environ), "path": sys.path, "umask": umask,
            "signals": dispositions,
            "sigmask": sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])),
            "std": [fd for fd in (0, 1, 2) if _is_open(fd)]}


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _run_in_server(script: str, started: float, wait: bool, patience: float | None) -> dict:
    import json
    import signal
    import socket
    import struct

    try:
        conn = _server_connection(wait)
    except OSError as err:
        raise _NotServed(str(err)) from None
    request = _request(script, started)
    # With patience the server answers "ready" and forks only on this client's "go": a
    # client that gave up waiting has sent none, so the script never runs twice.
    request["confirm"] = patience is not None
    payload = json.dumps(request).encode()
    replies = conn.makefile("rb")
    try:
        # With patience the descriptors go with the "go": a server busy for a while must
        # not hold this process's pipes open after it has gone on without it.
        socket.send_fds(conn, [struct.pack("!I", len(payload))],
                        [] if patience is not None else request["std"])
        conn.sendall(payload)
        first = _first_reply(conn, replies, patience, request["std"])
    except OSError:
        first = b""
    if not first:
        raise _NotServed("the server closed the connection")  # no child was started
    started = json.loads(first)
    if "pid" not in started:
        raise _NotServed(started.get("refused", "refused"))
    child = started["pid"]

    def forward(number, _frame):
        try:
            os.killpg(child, number)
        except ProcessLookupError:
            pass

    for name in FORWARDED_SIGNALS:
        number = getattr(signal, name)
        if signal.getsignal(number) is not signal.SIG_IGN:
            signal.signal(number, forward)
    last = replies.readline()
    if not last:
        sys.stderr.write("error: the stage launcher's server ended while the stage ran\n")
        sys.stderr.flush()
        return {"exit": 1}
    return json.loads(last)


def _first_reply(conn, replies, patience: float | None, fds: list[int]) -> bytes:
    """The server's answer to a request ({"pid": ...} or {"refused": ...}; b"" when it
    closed the connection). With `patience` the server first says it is ready and forks
    only on this client's "go", which carries the descriptors `fds`: one that gave up
    waiting has sent neither."""
    import json
    import socket

    if patience is None:
        return replies.readline()
    conn.settimeout(patience)
    try:
        ready = replies.readline()
    except TimeoutError:
        conn.close()
        raise _NotServed("the server is busy") from None
    conn.settimeout(None)
    if not ready or "ready" not in json.loads(ready):
        return ready
    socket.send_fds(conn, [b"go\n"], fds)
    return replies.readline()


def _exit_as(reply: dict) -> None:
    """End this process as the child ended: its exit code, or death by its signal."""
    if "signal" in reply:
        import signal

        number = reply["signal"]
        signal.signal(number, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [number])
        os.kill(os.getpid(), number)
        os._exit(128 + number)
    os._exit(reply["exit"])
