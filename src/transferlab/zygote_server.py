"""The resident side of the stage launcher (the client is transferlab.zygote).

Imports the heavy third-party packages the stages use once, listens on a Unix
socket and, for each stage run, forks a child that becomes the client's process:
its stdin/stdout/stderr, cwd, environment, argv, sys.path, umask and signal
dispositions, then runs the stage script as `__main__` and exits with the status
the plain `python script.py` would have.

It is started as a plain script (never `-m transferlab...`) and imports no
project code, so every child imports transferlab fresh from the client's
sys.path: an edited module is always the one that runs. It never runs a torch
op (no thread pools, no CUDA) and forks only while it has a single thread.

    python zygote_server.py SOCKET LOCK IDLE_SECONDS
"""

import os
import sys

# The folder of this file is sys.path[0]: the package's own modules (io, train,
# stage, ...) must never shadow or be taken for third-party ones here.
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

import errno  # noqa: E402
import fcntl  # noqa: E402
import gc  # noqa: E402
import importlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import selectors  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

# What the stages import from outside the project (python -X importtime on each stage
# script), in the order the pipeline first needs them, so that early stages are
# served while the rest loads. Requests are served between these steps.
PRELOAD = [
    ("numpy", "yaml", "ruamel.yaml", "argparse", "dataclasses", "pathlib", "json",
     "hashlib", "shutil", "traceback", "secrets", "xml.etree.ElementTree", "zipfile"),
    # The first torch stage (pretrain@A) comes right after validate and prepare, which
    # need none of torch and run in their own processes while the server is busy.
    ("torch",),
    ("torch.utils.serialization", "dvclive", "dvc.repo", "dvc.scm", "dulwich.porcelain",
     "fsspec.core", "fsspec.implementations.chained", "tabulate", "threadpoolctl"),
    ("torch._dynamo",),
    ("sklearn.datasets", "sklearn.ensemble", "sklearn.model_selection", "sklearn.svm",
     "sklearn.linear_model", "sklearn.manifold", "sklearn.metrics"),
    ("matplotlib", "matplotlib.pyplot", "matplotlib.backends.backend_agg", "torchvision"),
]
# The packages whose location a client's sys.path must resolve the same way.
TOP_LEVEL = sorted({name.split(".")[0] for step in PRELOAD for name in step}
                   - set(sys.stdlib_module_names))

HEADER = struct.Struct("!I")
PR_SET_PDEATHSIG = 1
REGISTERED_AS = "_transferlab_zygote_server"


def log(message: str) -> None:
    sys.stderr.write(f"{time.strftime('%H:%M:%S')} zygote {os.getpid()}: {message}\n")
    sys.stderr.flush()


class Refused(Exception):
    """This request cannot be served by a fork; the client runs the script itself."""


class Server:
    def __init__(self, listener: socket.socket, lock_fd: int, idle: float):
        self.listener = listener
        self.lock_fd = lock_fd
        self.idle = idle
        self.selector = selectors.DefaultSelector()
        self.selector.register(listener, selectors.EVENT_READ, ("accept", None))
        self.children: dict[int, tuple[socket.socket, int]] = {}  # pid -> (conn, pidfd)
        self.last_activity = time.monotonic()
        self.env_changes: dict[str, str] = {}
        self.unsafe: str | None = None  # why forking is refused, once found
        self.locations: dict[str, str | None] = {}
        self.reported: dict[int, dict] = {}  # pid -> the reply its client was sent
        # SIGCHLD runs on_child_exit only while a preload import runs; the loop itself
        # learns of exits from pidfds.
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGCHLD])
        signal.signal(signal.SIGCHLD, self.on_child_exit)

    # -- preloading ------------------------------------------------------------------
    def preload(self) -> None:
        for step in PRELOAD:
            for name in step:
                self._import(name)
                if self.unsafe:
                    return
            self.poll(0)
        gc.collect()
        log(f"ready ({len(sys.modules)} modules)")

    def _import(self, name: str) -> None:
        before_env = dict(os.environ)
        before_out = [os.fstat(fd).st_size for fd in (1, 2)]
        with warnings.catch_warnings(record=True) as caught:
            # A child ending during a long import is reported at once (see on_child_exit).
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGCHLD])
            try:
                importlib.import_module(name)
            except ImportError:
                return  # not installed here: the stage would fail or not need it
            finally:
                signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGCHLD])
        if caught:
            # A plain run prints this when the stage imports the module; a child could not.
            self.unsafe = f"importing {name} warned: {caught[0].message}"
        elif [os.fstat(fd).st_size for fd in (1, 2)] != before_out:
            self.unsafe = f"importing {name} printed output"
        for key in set(before_env) | set(os.environ):
            if before_env.get(key) != os.environ.get(key):
                if key in before_env:
                    self.unsafe = f"importing {name} changed the environment variable {key}"
                else:
                    # Set by the library on import (sklearn's KMP_*, inductor's cache dir):
                    # every child gets it where its client has none, as after a plain import.
                    self.env_changes[key] = os.environ[key]
        if self.unsafe:
            log(f"refusing to fork: {self.unsafe}; clients run their scripts themselves")

    # -- serving ---------------------------------------------------------------------
    def serve_forever(self) -> None:
        while True:
            self.poll(1.0)
            if not self.children and time.monotonic() - self.last_activity > self.idle:
                log(f"idle for {self.idle:g} s, exiting")
                return

    def poll(self, timeout: float) -> None:
        for key, _ in self.selector.select(timeout):
            kind, pid = key.data
            if kind == "accept":
                self.accept()
            elif kind == "exited":
                self.reap(pid)
            elif kind == "client":
                if pid in self.children:
                    self.selector.unregister(key.fileobj)
                    if pid not in self.reported:
                        # The client closed its end (it died) while its child runs.
                        self._kill_group(pid)
            self.last_activity = time.monotonic()

    def accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        try:
            conn.settimeout(10)
            request, fds = receive(conn)
        except (OSError, ValueError) as err:
            log(f"bad request: {err}")
            conn.close()
            return
        try:
            self.check(request)
            if request.get("confirm"):
                # A client with patience may have given up already: fork on its "go" only,
                # which brings its descriptors.
                send(conn, {"ready": True})
                go, fds = receive_go(conn, len(request["std"]))
                if go != b"go\n":
                    raise Refused("the client went on without the server")
        except (Refused, OSError, ValueError) as why:
            try:
                send(conn, {"refused": str(why)})
            except OSError:
                pass
            conn.close()
            for fd in fds:
                os.close(fd)
            return
        sys.stdout.flush()
        sys.stderr.flush()
        gc.freeze()  # the child's collections and exit skip what the server made
        try:
            pid = os.fork()
        except OSError as err:
            send(conn, {"refused": f"fork failed: {err}"})
            conn.close()
            for fd in fds:
                os.close(fd)
            return
        if pid == 0:
            self.close_in_child(conn)
            raise ChildStart(request, fds, self.env_changes)
        for fd in fds:
            os.close(fd)
        log(f"child {pid}: {' '.join(request['argv'])} in {request['cwd']}")
        pidfd = os.pidfd_open(pid)
        self.children[pid] = (conn, pidfd)
        self.selector.register(pidfd, selectors.EVENT_READ, ("exited", pid))
        self.selector.register(conn, selectors.EVENT_READ, ("client", pid))
        try:
            send(conn, {"pid": pid})
        except OSError:
            self._kill_group(pid)

    def check(self, request: dict) -> None:
        if self.unsafe:
            raise Refused(self.unsafe)
        threads = os.listdir("/proc/self/task")
        if len(threads) > 1:
            # OpenBLAS's idle workers: the shutdown its own fork handler would do first.
            shutdown_openblas()
            threads = os.listdir("/proc/self/task")
        if len(threads) > 1:
            self.unsafe = f"the server has {len(threads)} threads; forking is unsafe"
            log(f"refusing to fork: {self.unsafe}")
            raise Refused(self.unsafe)
        # A package the client's sys.path finds elsewhere would not be the preloaded one.
        from importlib.machinery import PathFinder

        for name in TOP_LEVEL:
            if name not in sys.modules:
                continue
            if name not in self.locations:
                self.locations[name] = getattr(sys.modules[name], "__file__", None)
            spec = PathFinder.find_spec(name, request["path"])
            if (spec.origin if spec else None) != self.locations[name]:
                raise Refused(f"{name} resolves elsewhere on the client's sys.path")

    def close_in_child(self, conn: socket.socket) -> None:
        """Close every descriptor of the server in a fresh fork (the lock above all: a
        child holding it would keep a new server from starting after this one ends)."""
        os.close(self.lock_fd)
        self.selector.close()
        self.listener.close()
        conn.close()
        for other, pidfd in self.children.values():
            other.close()
            os.close(pidfd)

    def on_child_exit(self, _signum, _frame) -> None:
        """Tell the clients of ended children their status without waiting for the import
        in progress to finish (a torch import takes seconds). Never raises into it."""
        try:
            for pid in list(self.children):
                if pid not in self.reported:
                    done, status = os.waitpid(pid, os.WNOHANG)
                    if done:
                        self.report(pid, self.children[pid][0], status)
        except BaseException:  # noqa: BLE001 - it would surface inside an import
            pass

    def report(self, pid: int, conn: socket.socket, status: int) -> None:
        reply = ({"signal": os.WTERMSIG(status)} if os.WIFSIGNALED(status)
                 else {"exit": os.WEXITSTATUS(status)})
        self.reported[pid] = reply
        try:
            send(conn, reply)
        except OSError:
            pass

    def reap(self, pid: int) -> None:
        conn, pidfd = self.children.pop(pid)
        self.selector.unregister(pidfd)
        try:
            self.selector.unregister(conn)
        except (KeyError, ValueError):
            pass
        if pid not in self.reported:
            _, status = os.waitpid(pid, 0)
            self.report(pid, conn, status)
        log(f"child {pid}: {self.reported.pop(pid)}")
        os.close(pidfd)
        conn.close()

    def _kill_group(self, pid: int) -> None:
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class ChildStart(BaseException):
    """Raised in a fresh fork to leave the server's frames before the script runs."""

    def __init__(self, request, fds, env_changes):
        super().__init__()
        self.request, self.fds, self.env_changes = request, fds, env_changes


def shutdown_openblas() -> None:
    """Stop the worker threads of every loaded OpenBLAS (they restart on the next call)."""
    import ctypes

    with open("/proc/self/maps") as fh:
        paths = {line.split()[-1] for line in fh if len(line.split()) >= 6}
    for path in sorted(paths):
        if "openblas" not in os.path.basename(path).lower() or ".so" not in path:
            continue
        lib = ctypes.CDLL(path)
        if hasattr(lib, "blas_thread_shutdown_"):
            lib.blas_thread_shutdown_()


def receive(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
    if len(data) < HEADER.size:
        raise ValueError("short header")
    (length,) = HEADER.unpack_from(data)
    body = data[HEADER.size:]
    while len(body) < length:
        chunk = conn.recv(length - len(body))
        if not chunk:
            raise ValueError("truncated request")
        body += chunk
    return json.loads(body), list(fds)


def receive_go(conn: socket.socket, count: int) -> tuple[bytes, list[int]]:
    """A patient client's "go" and the descriptors it carries (b"" when it closed)."""
    data, fds, _, _ = socket.recv_fds(conn, 16, max(count, 1))
    fds = list(fds)
    if len(fds) != count:
        for fd in fds:
            os.close(fd)
        return b"", []
    return data, fds


def send(conn: socket.socket, message: dict) -> None:
    conn.sendall(json.dumps(message).encode() + b"\n")


def serve(sock_path: str, lock_path: str, idle: float) -> None:
    lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return  # a live server of this key holds it
        raise
    os.ftruncate(lock_fd, 0)
    os.write(lock_fd, f"{os.getpid()}\n".encode())
    try:
        os.unlink(sock_path)  # left by a dead server of this key
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock_path)
    listener.listen(64)
    log(f"listening on {sock_path}")
    server = Server(listener, lock_fd, idle)
    try:
        server.preload()
        server.serve_forever()
    finally:
        if os.getpid() == SERVER_PID:
            try:
                os.unlink(sock_path)
            except FileNotFoundError:
                pass
            listener.close()


def become_client(start: ChildStart) -> tuple[dict, object]:
    """Turn this fresh fork into the client's process; return the request and __main__."""
    request = start.request
    os.setpgid(0, 0)  # the client forwards its signals to this group
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    signal.set_wakeup_fd(-1)
    for number in signal.valid_signals():
        if number in (signal.SIGKILL, signal.SIGSTOP):
            continue
        disposition = request["signals"].get(str(number), "default")
        handler = {"ignore": signal.SIG_IGN, "default": signal.SIG_DFL,
                   "interrupt": signal.default_int_handler}[disposition]
        try:
            signal.signal(number, handler)
        except (OSError, ValueError):
            pass
    signal.pthread_sigmask(signal.SIG_SETMASK, request["sigmask"])
    received = iter(start.fds)
    for fd in (0, 1, 2):
        if fd in request["std"]:
            passed = next(received)
            os.dup2(passed, fd)
            os.close(passed)
        else:
            os.close(fd)
    os.umask(request["umask"])
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for key, value in start.env_changes.items():
        os.environ.setdefault(key, value)
    time.tzset()
    sys.argv = request["argv"]
    global CLIENT_STARTED
    CLIENT_STARTED = request["started"]
    sys.orig_argv = request["orig_argv"]
    sys.path[:] = request["path"]
    # Fresh finders (and directory listings) for every path entry, as in a new process;
    # importlib.invalidate_caches() would cost more than all of this setup.
    sys.path_importer_cache.clear()
    import linecache

    linecache.clearcache()
    _reopen_std_streams(request["std"])
    # Per-process randomness a fresh interpreter would draw anew (`random` reseeds itself
    # after a fork; numpy's legacy global state and multiprocessing's key do not).
    if "numpy.random" in sys.modules:
        sys.modules["numpy.random"].seed()
    if "multiprocessing.process" in sys.modules:
        current = sys.modules["multiprocessing.process"].current_process()
        current.authkey = os.urandom(32)
    import types
    from importlib.machinery import SourceFileLoader

    main = types.ModuleType("__main__")
    main.__file__ = request["file"]
    main.__cached__ = None
    main.__loader__ = SourceFileLoader("__main__", request["file"])
    main.__builtins__ = __builtins__
    sys.modules["__main__"] = main
    return request, main


def _reopen_std_streams(present: list[int]) -> None:
    """sys.stdin/stdout/stderr for the client's descriptors, made as Python makes them at
    start-up: line-buffered on a terminal (stderr always), the same encoding and errors."""
    buffered = not sys.__stdout__.write_through if sys.__stdout__ else True
    made = {}
    for fd, old, mode in ((0, sys.__stdin__, "r"), (1, sys.__stdout__, "w"),
                          (2, sys.__stderr__, "w")):
        if fd not in present or old is None:
            made[fd] = None
            continue
        raw = io.FileIO(fd, mode + "b", closefd=False)
        raw.name = ("<stdin>", "<stdout>", "<stderr>")[fd]
        binary = io.BufferedReader(raw) if mode == "r" else (
            io.BufferedWriter(raw) if buffered or fd == 0 else raw)
        line = buffered and (raw.isatty() or fd == 2)
        stream = io.TextIOWrapper(binary, encoding=old.encoding, errors=old.errors,
                                  newline="\n", line_buffering=line,
                                  write_through=not buffered and mode == "w")
        stream.mode = mode
        made[fd] = stream
    sys.stdin = sys.__stdin__ = made[0]
    sys.stdout = sys.__stdout__ = made[1]
    sys.stderr = sys.__stderr__ = made[2]


def strip_frames(tb, path: str):
    """The traceback from the script's own frame on, as a plain run prints it."""
    while tb is not None and tb.tb_frame.f_code.co_filename != path:
        tb = tb.tb_next
    return tb


def finish(status: int, die_of: int | None = None) -> None:
    """Python's exit sequence for the script's objects, without tearing down the preloaded
    packages (seconds for torch): threads, atexit, flushing, the script's modules; then
    exit with `status`, or die of signal `die_of` as a plain interpreter does after an
    unhandled Ctrl-C."""
    import threading

    threading._shutdown()
    import atexit

    atexit._run_exitfuncs()
    status = _flush_std(status)
    main = sys.modules.get("__main__")
    fresh = [m for name, m in list(sys.modules.items()) if name not in PRELOADED_MODULES]
    for module in ([main] if main is not None else []) + fresh[::-1]:
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        # As the interpreter clears a module: _names first, then the rest; builtins kept.
        for first in (True, False):
            for key in list(namespace):
                if key != "__builtins__" and key.startswith("_") == first \
                        and not key.startswith("__"):
                    namespace[key] = None
    gc.collect()
    status = _flush_std(status)
    if die_of is not None:
        signal.signal(die_of, signal.SIG_DFL)
        os.kill(os.getpid(), die_of)
    os._exit(status)


def _flush_std(status: int) -> int:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None and not stream.closed:
                stream.flush()
        except Exception:
            if stream is sys.stdout:
                status = 120
    return status


SERVER_PID = os.getpid()
PRELOADED_MODULES: set[str] = set()
CLIENT_STARTED = None  # in a child: when the client process started (time.time())

if __name__ == "__main__":
    sys.modules[REGISTERED_AS] = sys.modules["__main__"]
    try:
        serve(sys.argv[1], sys.argv[2], float(sys.argv[3]))
        os._exit(0)
    except ChildStart as _start:
        PRELOADED_MODULES = set(sys.modules)
        _request, _main = become_client(_start)
        del _start
    # From here this process is the client's `python script.py`.
    try:
        with io.open_code(_request["file"]) as _fh:
            _code = compile(_fh.read(), _request["file"], "exec", dont_inherit=True)
        exec(_code, _main.__dict__)
    except SystemExit as _exc:
        _code_value = _exc.code
        if _code_value is None:
            finish(0)
        elif isinstance(_code_value, int):
            finish(_code_value & 0xFF)
        else:
            print(_code_value, file=sys.stderr)
            finish(1)
    except BaseException as _exc:
        _tb = strip_frames(_exc.__traceback__, _request["file"])
        _exc = _exc.with_traceback(_tb)  # the hook prints the exception's own traceback
        sys.last_type, sys.last_value, sys.last_traceback = type(_exc), _exc, _tb
        sys.excepthook(type(_exc), _exc, _tb)
        # A plain interpreter ends an unhandled Ctrl-C by dying of SIGINT.
        finish(1, signal.SIGINT if isinstance(_exc, KeyboardInterrupt) else None)
    finish(0)
