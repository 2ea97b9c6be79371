"""A folder's preparation runs only inside the sandbox (issue 21, point 4): its prepare.py
(`prepare = "auto"`) and its `[run] prepare` command run as the trial user, where no process
of the session can be read, with no network unless the user passes --prepare-network; the
data folder they print comes back only from their out/ folder or a [run] mount. The packaged
baseline's own prepare.py (our code) still prepares on the host.

The session is a real `autoresearch run` process with a canary key in its environment; the
probe is the folder's prepare.py. Network: a TCP server of the test's. The local backend
(root) is probed on 127.0.0.1, which an empty network namespace cannot reach and the host's
namespace can; Docker on the bridge's gateway, the host as a container on the default
network sees it."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.cli.main import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "karpathy_like"
CANARY = "canary-" + uuid.uuid4().hex  # the session's "API key"

# The folder's prepare.py: everything a hostile preparation would try, reported into the data
# folder it prints (out/data inside the sandbox; $HOME/data where nothing sandboxes it).
PROBE = '''
if __name__ == "__main__":
    import glob, json, os, socket
    report = {"uid": os.getuid(), "canary": []}
    for f in glob.glob("/proc/[0-9]*/environ"):
        try:
            if CANARY.encode() in open(f, "rb").read():
                report["canary"].append(f)
        except OSError:
            pass
    for name, path in MARKERS.items():
        try:
            open(path, "w").write("written by the folder's prepare step")
            report[name] = "written"
        except OSError as e:
            report[name] = type(e).__name__
    try:
        socket.create_connection(ADDRESS, timeout=3).close()
        report["network"] = "reached"
    except OSError as e:
        report["network"] = type(e).__name__
    home = os.path.expanduser("~")
    try:  # a [run] mount: where a preparation writes its data
        open(os.path.join(home, ".cache", "arfixture", "prepared.txt"), "w").write("ok")
        report["mount"] = "written"
    except OSError as e:
        report["mount"] = type(e).__name__
    data = os.path.join(os.environ.get("AR_OUT_DIR", home), "data")
    os.makedirs(data, exist_ok=True)
    open(os.path.join(data, "report.json"), "w").write(json.dumps(report))
    print(data)
'''


@pytest.fixture
def server():
    """A TCP server on every address of the host: (host port, connections seen)."""
    sock = socket.create_server(("0.0.0.0", 0))
    seen = []

    def serve():
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            seen.append(1)
            conn.close()
    threading.Thread(target=serve, daemon=True).start()
    yield sock.getsockname()[1], seen
    sock.close()


def _address(sandbox: str, docker_client=None) -> str:
    if sandbox == "local":
        return "127.0.0.1"
    subnet = docker_client.networks.get("bridge").attrs["IPAM"]["Config"][0]["Subnet"]
    return str(next(ipaddress.ip_network(subnet).hosts()))  # the gateway: this host


@pytest.fixture
def folder(tmp_path):
    """karpathy_like in a home of its own, prepared as its user would; prepare.py then
    replaced by the probe (train.py still imports its constants)."""
    home = tmp_path / "home"
    (home / ".cache" / "huggingface" / "hub" / "arfixture" / "score").mkdir(parents=True)
    home.chmod(0o755)
    (home / ".cache/huggingface/hub/arfixture/score/kernel.py").write_text(
        "def score(n, seq):\n    return 1.0 + 1.0 / (n + seq)\n")
    k = tmp_path / "k"
    shutil.copytree(FIXTURE, k)
    subprocess.run([sys.executable, "prepare.py"], cwd=k, check=True, capture_output=True,
                   env={"HOME": str(home), "PATH": "/usr/bin:/bin"})
    return k, home


def _probe(k: Path, markers: dict, address: tuple[str, int], mode: str) -> None:
    text = (k / "prepare.py").read_text().split('if __name__ == "__main__":')[0]
    (k / "prepare.py").write_text(f"{text}CANARY = {CANARY!r}\nMARKERS = {markers!r}\n"
                                  f"ADDRESS = {address!r}\n{PROBE}")
    toml = k / "search_space.toml"
    prepare = '"auto"' if mode == "auto" else '"python prepare.py"'
    toml.write_text(toml.read_text().replace(
        'prepare = "once"  # the user ran `python prepare.py`; the data lies in '
        '~/.cache/arfixture', f"prepare = {prepare}"))


def _session(args: list[str], home: Path) -> subprocess.CompletedProcess:
    """`autoresearch ...` as its own process, an API key in its environment."""
    env = {"HOME": str(home), "PATH": os.environ["PATH"], "OPENAI_API_KEY": CANARY,
           "LANG": "C.UTF-8"}
    return subprocess.run([sys.executable, "-c", "from agent.cli.main import app; app()", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("mode", ["command", "auto"])
@pytest.mark.parametrize("sandbox", ["local", "docker"])
def test_a_folders_preparation_reaches_no_key_no_host_file_and_no_network(
        folder, tmp_path, server, sandbox, mode, request):
    docker_client = request.getfixturevalue("docker_client") if sandbox == "docker" else None
    if sandbox == "docker":
        request.getfixturevalue("host_image")
    k, home = folder
    run = tmp_path / "run"
    markers = {"run_marker": str(run / "marker"), "root_marker": f"/root/ar-{uuid.uuid4().hex}",
               "home_marker": str(home / "marker")}
    port, seen = server
    _probe(k, markers, (_address(sandbox, docker_client), port), mode)
    try:
        out = _session(["run", "--train-dir", str(k), "--method", "random", "--trials", "0",
                        "--sandbox", sandbox, "--run-dir", str(run), "--quiet"], home)
        assert out.returncode == 0, out.stderr[-2000:]
        data = Path(next(line.split("=", 1)[1].strip().strip('"')
                         for line in (run / "session.toml").read_text().splitlines()
                         if line.startswith("data_dir")))
        report = json.loads((data / "report.json").read_text())
        print(sandbox, mode, report)
        assert report["canary"] == [], report  # no process of the session was readable
        if sandbox == "docker" or os.geteuid() == 0:
            assert report["uid"] == 65534
        for name, path in markers.items():
            assert report[name] != "written" and not Path(path).exists(), (name, report)
        assert report["network"] != "reached" and not seen, report
        assert data.is_relative_to(run / "prepare" / "out")  # the session got its data
        assert report["mount"] == "written"  # its [run] mount is writable while it prepares
        assert (home / ".cache" / "arfixture" / "prepared.txt").read_text() == "ok"
        trial = json.loads((run / "trials.jsonl").read_text().splitlines()[0])
        assert trial["status"] == "ok", trial["result"]["reason"]
        assert trial["result"]["metrics"]["cache_writable"] == "no"  # a trial's stays read-only
    finally:
        for path in markers.values():
            Path(path).unlink(missing_ok=True)


def _try_folder(tmp_path: Path, address: tuple[str, int], fetch: bool) -> Path:
    """train.py that prints a result, and a prepare.py that connects to `address` (with
    `fetch` it fails without the network, as a downloading prepare.py does)."""
    d = tmp_path / "t"
    d.mkdir()
    (d / "train.py").write_text("print('---')\nprint('val_bpb: 1.0')\n")
    (d / "prepare.py").write_text(
        "import os, socket, urllib.request\n"
        f"address = {address!r}\n"
        + ("urllib.request.urlopen('http://%s:%d/' % address, timeout=3)\n" if fetch else "")
        + "try:\n    socket.create_connection(address, timeout=3).close(); seen = 'reached'\n"
        "except OSError as e:\n    seen = type(e).__name__\n"
        "data = os.path.join(os.environ['AR_OUT_DIR'], 'data')\n"
        "os.makedirs(data, exist_ok=True)\n"
        "open(os.path.join(data, 'network'), 'w').write(seen)\n"
        "print(data)\n")
    return d


@pytest.mark.parametrize("sandbox", ["local", "docker"])
def test_prepare_network_gives_the_preparation_the_network(tmp_path, server, sandbox, request):
    docker_client = request.getfixturevalue("docker_client") if sandbox == "docker" else None
    if sandbox == "docker":
        request.getfixturevalue("host_image")
    port, seen = server
    d = _try_folder(tmp_path, (_address(sandbox, docker_client), port), fetch=False)
    out = tmp_path / "out"
    result = runner.invoke(app, ["sandbox", "try", str(d), "--sandbox", sandbox, "--out",
                                 str(out), "--prepare-network", "--json"])
    assert result.exit_code == 0, result.output
    assert (out / "prepare" / "out" / "data" / "network").read_text() == "reached" and seen


def test_a_preparation_that_needs_the_network_names_the_flag(tmp_path, server):
    port, seen = server
    d = _try_folder(tmp_path, ("127.0.0.1", port), fetch=True)
    result = runner.invoke(app, ["sandbox", "try", str(d), "--sandbox", "local", "--out",
                                 str(tmp_path / "out")])
    assert result.exit_code == 1
    lines = [x for x in result.output.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "--prepare-network" in lines[0], result.output
    assert not seen


def test_rerun_runs_a_run_folders_prepare_py_in_the_sandbox(folder, tmp_path):
    k, home = folder
    run = tmp_path / "run"
    out = _session(["run", "--train-dir", str(k), "--method", "random", "--trials", "0",
                    "--sandbox", "local", "--run-dir", str(run), "--quiet"], home)
    assert out.returncode == 0, out.stderr[-2000:]
    # Someone else's run folder: its training folder prepares with `auto`, and its repo's
    # prepare.py writes on the host when it can.
    toml = k / "search_space.toml"
    toml.write_text(toml.read_text().replace(
        'prepare = "once"  # the user ran `python prepare.py`; the data lies in '
        '~/.cache/arfixture', 'prepare = "auto"'))
    marker = tmp_path / "marker"
    (run / "repo" / "prepare.py").write_text(
        "import os\n"
        f"try:\n    open({str(marker)!r}, 'w').write('host')\nexcept OSError:\n    pass\n"
        "data = os.path.join(os.environ.get('AR_OUT_DIR', '/tmp'), 'data')\n"
        "os.makedirs(data, exist_ok=True)\nprint(data)\n")
    result = _session(["rerun", str(run), "0", "--json"], home)
    assert not marker.exists(), result.stdout + result.stderr
    assert result.returncode == 0, result.stderr[-2000:]
    assert (run / "prepare" / "train.log").is_file()  # it ran in the sandbox


@pytest.mark.parametrize("printed", ["/etc", "link"])
def test_only_a_folder_of_its_own_or_a_mount_comes_back(tmp_path, printed):
    from agent.config.data import DataError, Preparation, prepare_default_data

    d = tmp_path / "p"
    d.mkdir()
    (d / "prepare.py").write_text(
        "import os\nout = os.environ['AR_OUT_DIR']\n"
        "os.symlink('/etc', os.path.join(out, 'link'))\n"
        f"print({printed!r} if {printed!r}.startswith('/') else os.path.join(out, {printed!r}))\n")
    with pytest.raises(DataError, match="not a folder inside its"):
        prepare_default_data(d, Preparation("local", tmp_path / "w"))


def test_the_packaged_prepare_py_still_prepares_on_the_host(tmp_path):
    from agent.config.data import Preparation, prepare_default_data
    from agent.paths import baseline_dir

    d = tmp_path / "b"
    d.mkdir()
    shutil.copy(baseline_dir() / "prepare.py", d / "prepare.py")
    data = prepare_default_data(d, Preparation("local", tmp_path / "w"))
    assert (data / "train.bin").is_file()
    assert not (tmp_path / "w").exists()  # no sandbox run: our code, on the host
