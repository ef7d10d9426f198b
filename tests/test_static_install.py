"""The static report's Allure install: two runs at once never use a half-installed tree, and
a tree an earlier install left unfinished is replaced, not used."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from harness.report import static

# a stand-in npm: writes the CLI link first and the rest of the package slowly, as npm does
FAKE_NPM = """#!/bin/sh
prefix=$(echo "$@" | sed 's/.*--prefix \\([^ ]*\\).*/\\1/')
mkdir -p "$prefix/node_modules/.bin" "$prefix/node_modules/allure"
echo "#!/bin/sh" > "$prefix/node_modules/.bin/allure"
chmod +x "$prefix/node_modules/.bin/allure"
echo $$ >> "$COUNT"
sleep 1
echo done > "$prefix/node_modules/allure/index.js"
"""


@pytest.fixture
def fake_npm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    npm = bin_dir / "npm"
    npm.write_text(FAKE_NPM)
    npm.chmod(npm.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("PINLOOP_TOOLS", str(tmp_path / "tools"))
    monkeypatch.setenv("COUNT", str(tmp_path / "count"))
    return tmp_path


def test_two_installs_at_once_install_once_and_both_get_a_complete_tree(fake_npm: Path) -> None:
    code = "from harness.report.static import allure_cli; print(allure_cli())"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=os.environ
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    for out in outs:  # each caller got a tree npm had finished with
        assert (Path(out).parent.parent / "allure" / "index.js").read_text() == "done\n"
    assert len((fake_npm / "count").read_text().split()) == 1  # the second waited, then used it
    leftovers = [p.name for p in (fake_npm / "tools").iterdir()]
    assert sorted(leftovers) == [
        f"allure-{static.ALLURE_VERSION}",
        f"allure-{static.ALLURE_VERSION}.lock",
    ]


def test_a_tree_left_unfinished_is_replaced_not_used(fake_npm: Path) -> None:
    half = fake_npm / "tools" / f"allure-{static.ALLURE_VERSION}" / "node_modules" / ".bin"
    half.mkdir(parents=True)
    (half / "allure").write_text("#!/bin/sh\n")  # the link, and nothing else: cut off
    with ThreadPoolExecutor(1) as pool:
        cli = pool.submit(static.allure_cli).result(timeout=60)
    assert (cli.parent.parent / "allure" / "index.js").read_text() == "done\n"
    assert (cli.parent.parent.parent / static.COMPLETE).exists()
