"""What the door gets: the runtime package only, never the development tools (demo, testbed, measurements)."""

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_runtime_package_never_imports_the_development_package():
    offenders = [str(path.relative_to(REPO)) for path in (REPO / "intercom").rglob("*.py")
                 if "intercom_dev" in path.read_text()]
    assert offenders == []


def test_the_wheel_the_sd_image_installs_holds_no_development_tools(tmp_path):
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(REPO)],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("intercom-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    packages = {name.split("/", 1)[0] for name in names}
    assert packages == {"intercom", wheel.name.split("-py")[0] + ".dist-info"}, packages
    assert "intercom/cli.py" in names and "intercom/media/filedevices.py" in names
    assert "intercom/data/asound-files.conf" in names  # --simulate's sound devices are part of the door
    for dev_tool in ("testbed", "demo.py", "media/testing.py", "measure.py", "intercom_dev"):
        assert not any(dev_tool in name for name in names), dev_tool
