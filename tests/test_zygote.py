"""The stage launcher (transferlab.zygote): a script run through the resident server
behaves as the same script run by a fresh interpreter, with real processes.

Every test uses a socket folder of its own (TRANSFERLAB_ZYGOTE_DIR), so no server is
shared with other tests or users, and the servers it started are stopped at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from .conftest import ROOT, TINY, write_params
from .pipeline_runner import make_project

SRC = ROOT / "src"

# A script shaped like a stage: the handoff first; it reports on a side channel whether
# it ran in the server's child, and prints what a stage could depend on.
SCRIPT = '''\
import sys
import time

STARTED = time.time()
PROJECT_PRELOADED = "transferlab" in sys.modules

import os

from transferlab.zygote import handoff

STARTED = handoff(STARTED, patience=float(os.environ["PATIENCE"])
                  if os.environ.get("PATIENCE") else None)

import json

with open(os.environ["PROBE"], "w") as fh:
    json.dump({"served": "_transferlab_zygote_server" in sys.modules, "pid": os.getpid(),
               "parent": os.getppid(), "project_preloaded": PROJECT_PRELOADED}, fh)
with open(os.environ["PROBE"] + ".runs", "a") as fh:
    fh.write(f"{os.getpid()}\\n")
mode = sys.argv[1] if len(sys.argv) > 1 else "ok"
umask = os.umask(0)
print(json.dumps({"argv": sys.argv, "cwd": os.getcwd(), "file": __file__,
                  "name": __name__, "path": sys.path, "umask": umask,
                  "visible": os.environ.get("VISIBLE"), "tz": time.tzname,
                  "stdin": sys.stdin.read() if mode == "stdin" else None,
                  "started_before_now": STARTED <= time.time()}))
print("to stderr", file=sys.stderr)
if mode == "exit2":
    sys.exit(2)
if mode == "message":
    sys.exit("stopped: a message")
if mode == "raise":
    def inner():
        raise ValueError("boom")
    inner()
if mode == "sleep":
    with open(os.environ["PROBE"] + ".sleeping", "w") as fh:
        fh.write(str(os.getpid()))
    time.sleep(60)
if mode == "module":
    import edited_module
    print(edited_module.VALUE)
'''


def _servers(folder: Path) -> list[int]:
    """pids of the live servers of a socket folder (each writes its pid in its lock)."""
    pids = []
    for lock in folder.glob("*.lock"):
        text = lock.read_text().strip()
        if text and Path(f"/proc/{text}").exists():
            pids.append(int(text))
    return pids


def _stop_servers(folder: Path) -> None:
    pids = _servers(folder)
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.fixture(scope="module")
def launcher():
    """A private socket folder (short: socket paths have a 107-byte limit), the
    environment of its clients, and the first run, which starts the server."""
    folder = Path(tempfile.mkdtemp(prefix="tlz-", dir="/tmp"))
    work = folder / "work"
    work.mkdir()
    script = work / "script.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{work / 'lib'}",
           "TRANSFERLAB_ZYGOTE_DIR": str(folder / "sockets"),
           "TRANSFERLAB_ZYGOTE_IDLE": "60", "PROBE": str(folder / "probe.json")}
    env.pop("TRANSFERLAB_ZYGOTE", None)
    started = time.monotonic()
    # capture_output: a server holding the client's pipes would keep this from returning.
    first = subprocess.run([sys.executable, "script.py"], cwd=work, env=env,
                           capture_output=True, text=True, timeout=120)
    info = {"folder": folder, "work": work, "env": env, "first": first,
            "first_seconds": time.monotonic() - started,
            "first_probe": json.loads((folder / "probe.json").read_text())}
    try:
        yield info
    finally:
        _stop_servers(folder / "sockets")
        shutil.rmtree(folder, ignore_errors=True)


def run(launcher, *args, zygote=True, env=None, cwd=None, **kwargs):
    """Run the script as `python script.py ARGS`; return (process, probe)."""
    probe = launcher["folder"] / "probe.json"
    probe.unlink(missing_ok=True)
    full_env = {**launcher["env"], **(env or {})}
    if not zygote:
        full_env["TRANSFERLAB_ZYGOTE"] = "0"
    proc = subprocess.run([sys.executable, str(launcher["work"] / "script.py"), *args]
                          if cwd else [sys.executable, "script.py", *args],
                          cwd=cwd or launcher["work"], env=full_env, capture_output=True,
                          text=True, timeout=120, **kwargs)
    return proc, json.loads(probe.read_text())


def test_a_new_server_is_detached_and_holds_no_pipe_of_its_client(launcher):
    first = launcher["first"]
    assert first.returncode == 0, first.stderr
    # Returned with the server still running (it lives 60 s idle): nothing held the pipes.
    assert launcher["first_seconds"] < 60
    pids = _servers(launcher["folder"] / "sockets")
    assert len(pids) == 1
    fds = [os.readlink(f"/proc/{pids[0]}/fd/{fd}") for fd in os.listdir(f"/proc/{pids[0]}/fd")]
    assert not [target for target in fds if target.startswith("pipe:")], fds
    # The server is in a session of its own, not the client's.
    assert os.getsid(pids[0]) == pids[0]


@pytest.mark.parametrize("mode", ["ok", "exit2", "message", "raise"])
def test_output_and_exit_status_are_those_of_a_plain_run(launcher, mode):
    served, probe = run(launcher, mode)
    plain, plain_probe = run(launcher, mode, zygote=False)
    assert probe["served"] and not plain_probe["served"]
    assert served.returncode == plain.returncode == {"ok": 0, "exit2": 2, "message": 1,
                                                     "raise": 1}[mode]
    assert served.stdout == plain.stdout
    assert served.stderr == plain.stderr
    if mode == "raise":
        # The traceback starts at the script, as a plain interpreter prints it.
        lines = served.stderr.splitlines()
        assert lines[lines.index("Traceback (most recent call last):") + 1].startswith(
            f'  File "{launcher["work"] / "script.py"}", line ')
        assert "zygote" not in served.stderr


def test_the_child_gets_the_clients_argv_cwd_environment_path_umask_and_stdin(launcher,
                                                                            tmp_path):
    extra = tmp_path / "extra"
    extra.mkdir()
    env = {"VISIBLE": "from the client",
           "PYTHONPATH": launcher["env"]["PYTHONPATH"] + os.pathsep + str(extra)}
    kwargs = {"env": env, "cwd": tmp_path, "umask": 0o027, "input": "piped in\n"}
    served, probe = run(launcher, "stdin", "--flag", **kwargs)
    plain, _ = run(launcher, "stdin", "--flag", zygote=False, **kwargs)
    assert probe["served"]
    assert served.returncode == plain.returncode == 0
    seen = json.loads(served.stdout)
    assert seen == json.loads(plain.stdout)
    assert seen["argv"] == [str(launcher["work"] / "script.py"), "stdin", "--flag"]
    assert seen["cwd"] == str(tmp_path)
    assert seen["visible"] == "from the client"
    assert str(extra) in seen["path"]
    assert seen["umask"] == 0o027
    assert seen["stdin"] == "piped in\n"
    assert seen["name"] == "__main__" and seen["started_before_now"]


def test_a_client_with_patience_runs_itself_while_the_server_is_busy_never_twice(launcher):
    run(launcher)  # the server is up
    (server,) = _servers(launcher["folder"] / "sockets")
    runs = launcher["folder"] / "probe.json.runs"
    runs.unlink(missing_ok=True)
    ready, probe = run(launcher, env={"PATIENCE": "5"})
    assert ready.returncode == 0 and probe["served"]  # a free server takes it
    os.kill(server, signal.SIGSTOP)  # as busy as while it imports torch
    try:
        busy, probe = run(launcher, env={"PATIENCE": "0.2"})
    finally:
        os.kill(server, signal.SIGCONT)
    assert busy.returncode == 0 and not probe["served"]
    assert busy.stdout == ready.stdout
    # The server then reads the request of a client that went on without it: no fork.
    time.sleep(0.5)
    after, probe = run(launcher)
    assert after.returncode == 0 and probe["served"]
    time.sleep(0.2)
    assert len(runs.read_text().splitlines()) == 3


def test_project_modules_are_never_preloaded_and_an_edit_is_seen(launcher):
    lib = launcher["work"] / "lib"
    lib.mkdir(exist_ok=True)
    module = lib / "edited_module.py"
    module.write_text("VALUE = 'first'\n")
    one, probe = run(launcher, "module")
    assert probe["served"] and not probe["project_preloaded"]
    assert one.stdout.splitlines()[-1] == "first"
    module.write_text("VALUE = 'second, edited'\n")
    two, probe = run(launcher, "module")
    assert probe["served"]
    assert two.stdout.splitlines()[-1] == "second, edited"


def test_a_different_import_time_variable_gets_another_server(launcher):
    # POSIX zone strings: no time zone database needed.
    here, probe_here = run(launcher, env={"TZ": "AAA3"})
    there, probe_there = run(launcher, env={"TZ": "BBB-4"})
    assert probe_here["served"] and probe_there["served"]
    assert probe_here["parent"] != probe_there["parent"]
    assert json.loads(here.stdout)["tz"] == ["AAA", "AAA"]
    assert json.loads(there.stdout)["tz"] == ["BBB", "BBB"]
    same, probe_same = run(launcher, env={"TZ": "AAA3"})
    assert probe_same["parent"] == probe_here["parent"]


def _start_sleeper(launcher):
    probe = launcher["folder"] / "probe.json"
    sleeping = Path(str(probe) + ".sleeping")
    sleeping.unlink(missing_ok=True)
    client = subprocess.Popen([sys.executable, "script.py", "sleep"], cwd=launcher["work"],
                              env=launcher["env"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not sleeping.exists() or not sleeping.read_text():
        assert time.monotonic() < deadline and client.poll() is None
        time.sleep(0.05)
    child = int(sleeping.read_text())
    assert child != client.pid and json.loads(probe.read_text())["served"]
    return client, child


def _gone(pid: int, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_killing_the_client_kills_the_child(launcher):
    client, child = _start_sleeper(launcher)
    client.kill()
    client.wait()
    assert _gone(child)


def test_a_signal_to_the_client_ends_the_child_and_the_client_as_it_would_a_plain_run(
        launcher):
    client, child = _start_sleeper(launcher)
    client.send_signal(signal.SIGTERM)
    assert client.wait(timeout=10) == -signal.SIGTERM  # what a plain process returns
    assert _gone(child)


def test_disabled_or_imported_scripts_run_in_their_own_process(launcher):
    plain, probe = run(launcher, zygote=False)
    assert not probe["served"] and probe["parent"] != _servers(
        launcher["folder"] / "sockets")[0]
    # Run by runpy inside another program (the tests' in-process pipeline runner).
    code = ("import runpy, sys; sys.argv = ['script.py']; "
            "runpy.run_path('script.py', run_name='__main__')")
    inside = subprocess.run([sys.executable, "-c", code], cwd=launcher["work"],
                            env=launcher["env"], capture_output=True, text=True, timeout=60)
    assert inside.returncode == 0, inside.stderr
    probe = json.loads((launcher["folder"] / "probe.json").read_text())
    assert not probe["served"]


STAGES = [["validate.py"], ["prepare.py"], ["pretrain.py", "--source", "A"], ["features.py"],
          ["heads.py"]]


def _run_stages(project: Path, env: dict) -> dict[str, bytes]:
    for argv in STAGES:
        proc = subprocess.run([sys.executable, f"stages/{argv[0]}", *argv[1:]], cwd=project,
                              env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{argv}: {proc.stderr}"
    return {p.relative_to(project).as_posix(): p.read_bytes()
            for folder in ("data", "models", "results", "dvclive")
            for p in sorted((project / folder).rglob("*")) if p.is_file()}


def test_real_stages_give_byte_identical_outputs_with_and_without_the_launcher(
        launcher, tmp_path):
    outputs = {}
    for mode in ("served", "plain"):
        project = make_project(tmp_path / mode, ROOT)
        write_params(project / "params.yaml", TINY)
        env = {**launcher["env"], "PYTHONPATH": str(SRC), "TRANSFERLAB_NO_PROGRESS": "1",
               "TRANSFERLAB_STORE": str(tmp_path / f"store-{mode}"),
               "PROBE": str(tmp_path / "unused")}
        if mode == "plain":
            env["TRANSFERLAB_ZYGOTE"] = "0"
        outputs[mode] = _run_stages(project, env)
    log = "".join(p.read_text() for p in (launcher["folder"] / "sockets").glob("*.log"))
    served = [" ".join(argv) for argv in STAGES if f"stages/{' '.join(argv)} in " in log]
    assert len(served) == len(STAGES), log
    assert "models/A.pt" in outputs["served"] and "results/heads.json" in outputs["served"]
    assert outputs["served"].keys() == outputs["plain"].keys()
    different = [name for name in outputs["served"]
                 if outputs["served"][name] != outputs["plain"][name]]
    assert not different
