"""image-build/'s scripts: CI's change detection (only the paths that cannot start a build) and shellcheck."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

IMAGE_BUILD = Path(__file__).resolve().parents[2] / "image-build"
CI_JOB = IMAGE_BUILD / "ci-job"
SCRIPTS = ["ci-job", "build-image", "boot-test", "customize.sh", "debian-base-hook.sh", "debian-initramfs-hook.sh",
           "overlay/usr/lib/intercom-image/grow-rootfs"]


def ci_job(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "INTERCOM_BUILD_IMAGE"}
    environ.update(INTERCOM_CACHE=str(tmp_path), INTERCOM_IMAGE_DRY_RUN="1", **env)  # never really builds
    return subprocess.run(["bash", str(CI_JOB), *args], env=environ, capture_output=True, text=True, timeout=60)


def test_skip_switch_prints_one_line_and_succeeds(tmp_path: Path) -> None:
    result = ci_job(tmp_path, INTERCOM_BUILD_IMAGE="0")
    assert result.returncode == 0
    assert result.stdout.count("\n") == 1 and "skipped" in result.stdout


def test_unchanged_inputs_skip_the_build(tmp_path: Path) -> None:
    digest = ci_job(tmp_path, "--inputs-hash").stdout.strip()
    assert len(digest) == 16
    (tmp_path / "image-build.stamp").write_text(digest + "\n")
    result = ci_job(tmp_path)
    assert result.returncode == 0 and result.stdout.count("\n") == 1
    assert "unchanged since the last successful image build" in result.stdout and "INTERCOM_BUILD_IMAGE=1" in result.stdout


def test_a_missing_stamp_or_the_force_switch_builds(tmp_path: Path) -> None:
    assert "inputs changed" in ci_job(tmp_path).stdout
    assert "forced by INTERCOM_BUILD_IMAGE=1" in ci_job(tmp_path, INTERCOM_BUILD_IMAGE="1").stdout


def test_a_bad_switch_value_fails(tmp_path: Path) -> None:
    result = ci_job(tmp_path, INTERCOM_BUILD_IMAGE="maybe")
    assert result.returncode != 0 and "must be 1" in result.stderr


def _shellcheck() -> str:
    """Debian's shellcheck: ``scripts/test`` installs it; a bare pytest run installs it here (root or sudo)."""
    found = shutil.which("shellcheck")
    if found is None:
        sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
        install = subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", "shellcheck"],
                                 capture_output=True, text=True, timeout=300,
                                 env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        found = shutil.which("shellcheck")
        if found is None:
            pytest.fail(f"shellcheck is not installed and apt-get could not install it: {install.stderr[-2000:]}")
    return found


def test_shell_scripts_pass_shellcheck() -> None:
    shellcheck = _shellcheck()
    result = subprocess.run([shellcheck, *SCRIPTS], cwd=IMAGE_BUILD, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    guest = subprocess.run([shellcheck, "-s", "sh", "boot-test-guest.sh"], cwd=IMAGE_BUILD, capture_output=True,
                           text=True)
    assert guest.returncode == 0, guest.stdout
