"""`dvc plots show` / `dvc plots diff` pages render offline, each plot once.

Runs the real dvc on a copy of the project's plot definitions and its git-tracked plot
files (no training), then opens the written page in headless Chromium with every
network request sent to a dead proxy: a Vega plot draws only if vega, vega-lite and
vega-embed came from the repository (`.dvc/plots/`), not from a CDN.

Chromium is required (`make test` installs Debian's package when it can); set
TRANSFERLAB_SKIP_BROWSER=1 to skip the browser part on a machine without it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DVC = [sys.executable, "-m", "dvc"]
PROJECT_FILES = ["dvc.yaml", "params.yaml", "recipe.yaml", ".dvc/config", ".dvc/plots", "plots"]

pytestmark = pytest.mark.e2e


def _chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    return found or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A git + dvc repository holding what a fresh clone has of the plots."""
    path = tmp_path_factory.mktemp("plots") / "repo"
    path.mkdir()
    _run(path, "git", "init", "-q")
    _run(path, *DVC, "init", "-q")
    for name in PROJECT_FILES:
        src, dst = ROOT / name, path / name
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        else:
            shutil.copy2(src, dst)
    for args in (["config", "user.email", "t@example.org"], ["config", "user.name", "t"],
                 ["add", "-A"], ["commit", "-qm", "plots"]):
        _run(path, "git", *args)
    return path


@pytest.fixture(scope="module")
def plots(repo) -> dict:
    return json.loads(_run(repo, *DVC, "plots", "show", "--json").stdout)


def _declared() -> tuple[list[str], dict[str, dict]]:
    """The top-level plots of dvc.yaml: PNG paths, and {title: definition} of the others."""
    import yaml

    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    pngs = [p for p in spec["plots"] if isinstance(p, str) and p.endswith(".png")]
    defined = {name: d for p in spec["plots"] if isinstance(p, dict) for name, d in p.items()}
    return pngs, defined


def test_every_plot_loads_once_with_x_y_and_a_template(plots):
    assert "errors" not in plots, plots.get("errors")
    data = plots["data"]
    vega = {name: [p for p in ps if p["type"] == "vega"] for name, ps in data.items()}
    vega = {name: ps for name, ps in vega.items() if ps}
    images = [p["url"] for ps in data.values() for p in ps if p["type"] == "image"]
    pngs, defined = _declared()
    # Each PNG once (not also as a stage plot), nothing but the definitions drawn.
    assert len(images) == len(pngs) == len(set(images)) >= 7
    assert set(vega) == set(defined) and all(len(ps) == 1 for ps in vega.values())
    for name, d in defined.items():
        assert d.get("template") and d.get("x") and d.get("y"), name
        rows = vega[name][0]["content"]["data"]["values"]
        assert rows, f"plot {name!r} has no data"
        columns = {c for cols in d["y"].values() for c in ([cols] if isinstance(cols, str)
                                                           else cols)}
        for row in rows:  # a real x column of the file and every declared y column
            assert row.get(d["x"], "") != "" and columns <= set(row), (name, row)
    curves = {f for d in defined.values() for f in d["y"] if f.startswith("plots/curves/")}
    assert curves == {"plots/curves/pretrain-A.tsv", "plots/curves/pretrain-B.tsv",
                      "plots/curves/transfer.tsv", "plots/curves/sweep.tsv"}


def test_the_page_has_each_png_once_and_no_cdn_script(repo, plots):
    out = repo / "dvc_plots"
    _run(repo, *DVC, "plots", "show")
    html = (out / "index.html").read_text()
    written = sorted(p.name for p in (out / "static").glob("*.png"))
    assert len(written) == len(_declared()[0]) == len(set(written))
    assert html.count("<img") == len(written)
    scripts = re.findall(r"<script[^>]*\bsrc=\"([^\"]+)\"", html)
    assert scripts == ["../.dvc/plots/vega.min.js", "../.dvc/plots/vega-lite.min.js",
                       "../.dvc/plots/vega-embed.min.js"]
    assert "cdn.jsdelivr" not in html
    for script in scripts:
        assert (out / script).resolve().is_file()


def _render(page: Path, tmp_path: Path) -> str:
    chromium = _chromium()
    if chromium is None:
        if os.environ.get("TRANSFERLAB_SKIP_BROWSER") == "1":
            pytest.skip("no Chromium and TRANSFERLAB_SKIP_BROWSER=1")
        pytest.fail("Chromium is missing (apt-get install chromium, or `make test` as root); "
                    "set TRANSFERLAB_SKIP_BROWSER=1 to skip this check")
    profile = tmp_path / "chromium-profile"
    proc = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}",
         # Every request that is not a local file goes to a closed port: offline.
         "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
         "--virtual-time-budget=15000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def _assert_rendered(dom: str, vega_plots: int) -> None:
    # vega-embed marks each container it filled and draws a canvas into it.
    embedded = len(re.findall(r'class="[^"]*\bvega-embed\b', dom))
    drawn = dom.count("<canvas") + dom.count("<svg")
    assert embedded == vega_plots, f"{embedded} of {vega_plots} Vega plots embedded"
    assert drawn >= vega_plots, f"{drawn} canvases for {vega_plots} Vega plots"


def test_plots_show_page_renders_offline(repo, plots, tmp_path):
    vega = sum(p["type"] == "vega" for ps in plots["data"].values() for p in ps)
    _run(repo, *DVC, "plots", "show")
    _assert_rendered(_render(repo / "dvc_plots" / "index.html", tmp_path), vega)


def test_plots_diff_page_renders_offline(repo, plots, tmp_path):
    transfer = repo / "plots" / "curves" / "transfer.tsv"
    lines = transfer.read_text().splitlines()
    assert len(lines) > 2, "the transfer curve has fewer than 2 logged steps"
    transfer.write_text("\n".join(lines[:-1]) + "\n")  # a changed workspace against HEAD
    try:
        _run(repo, *DVC, "plots", "diff", "HEAD", "-o", "dvc_plots_diff")
    finally:
        _run(repo, "git", "checkout", "--", "plots")
    page = repo / "dvc_plots_diff" / "index.html"
    html = page.read_text()
    assert "cdn.jsdelivr" not in html and "../.dvc/plots/vega.min.js" in html
    vega = sum(p["type"] == "vega" for ps in plots["data"].values() for p in ps)
    _assert_rendered(_render(page, tmp_path), vega)
