#!/usr/bin/env bash
# The intercom's customisation of an arm64 Debian or Raspberry Pi OS root file system: THE one script shared by
# every way of building the image. It takes the root directory as its only argument, as an mmdebstrap or
# rpi-image-gen customize-hook gives it ("$1") and as pi-gen's stage scripts have it ("$ROOTFS_DIR"):
#
#   image-build/customize.sh /path/to/rootfs
#
# It runs on the build host and enters the root with chroot (an arm64 root on an x86 host needs qemu-user-static
# and binfmt_misc). It needs network access for apt and pip. What it does:
#   - installs the packages in packages.txt that are missing,
#   - creates the service user `intercom` (groups gpio, audio, video; gpio is created if missing),
#   - installs the intercom wheel with its dependencies into /opt/intercom/venv (--system-site-packages, so that
#     Raspberry Pi OS's python3-picamera2/libcamera/lgpio are used), compiling what has no arm64 wheel,
#   - installs systemd/intercom.service unchanged, the image's units from overlay/, intercom.toml.example on the
#     boot partition, and enables them; ssh is installed but disabled (a file named `ssh` on the boot partition
#     turns it on),
#   - removes the ssh host keys and empties /etc/machine-id, so every card makes its own on first boot.
#
# Environment (all optional):
#   INTERCOM_WHEEL            the intercom wheel to install (default: built from this repository with pip wheel)
#   INTERCOM_HOSTNAME         default host name of the image (default: doorbell)
#   INTERCOM_PIP_CACHE        a host directory kept as pip's cache between builds (default: none)
#   INTERCOM_PURGE_BUILD_DEPS=1  also remove build-deps.txt packages that were installed before this script ran
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
root=${1:?usage: customize.sh ROOTFS_DIR}
root=$(cd "$root" && pwd)
hostname=${INTERCOM_HOSTNAME:-doorbell}
venv=/opt/intercom/venv

log() { printf 'customize: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ -x "$root/usr/bin/python3" ] || [ -e "$root/etc/debian_version" ] || die "$root does not look like a Debian root file system"

# Run a command inside the root with a clean environment: the host's PIP_*, VIRTUAL_ENV etc. must not leak in.
in_root() {
    chroot "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
}

# --- what a chroot needs, unless the builder (mmdebstrap, pi-gen's on_chroot) already set it up -------------------
cleanup=()
on_exit() {
    local i
    for ((i = ${#cleanup[@]} - 1; i >= 0; i--)); do eval "${cleanup[i]}" || true; done
}
trap on_exit EXIT

mount_into_root() {  # mount_into_root TYPE SOURCE DIR [OPTIONS]
    local dir=$root$3
    mountpoint -q "$dir" && return 0
    mkdir -p "$dir"
    if [ "$1" = bind ]; then mount --bind "$2" "$dir"; else mount -t "$1" "$2" "$dir"; fi
    cleanup+=("umount -l '$dir'")
}
mount_into_root proc proc /proc
mount_into_root sysfs sysfs /sys
mount_into_root bind /dev /dev
mount_into_root bind /dev/pts /dev/pts

if [ ! -s "$root/etc/resolv.conf" ] && [ ! -L "$root/etc/resolv.conf" ]; then
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    cleanup+=("rm -f '$root/etc/resolv.conf'")
fi
if [ ! -e "$root/usr/sbin/policy-rc.d" ]; then  # no daemons start while packages are installed
    printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
    chmod 755 "$root/usr/sbin/policy-rc.d"
    cleanup+=("rm -f '$root/usr/sbin/policy-rc.d'")
fi

package_list() { sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$1"; }
missing_packages() {
    local p
    for p in "$@"; do
        # shellcheck disable=SC2016  # ${Status} is dpkg-query's field, not a shell variable
        dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Status}\n' "$p" 2>/dev/null \
            | grep -q 'install ok installed' || echo "$p"
    done
}
apt_install() {
    if ! compgen -G "$root/var/lib/apt/lists/*_Packages*" >/dev/null; then
        in_root apt-get update -qq
    fi
    in_root apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confold "$@"
}

# --- packages ---------------------------------------------------------------------------------------------------
mapfile -t runtime < <(package_list "$here/packages.txt")
mapfile -t build_deps < <(package_list "$here/build-deps.txt")
mapfile -t missing < <(missing_packages "${runtime[@]}")
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt_install "${missing[@]}"
fi
mapfile -t missing_build < <(missing_packages "${build_deps[@]}")
if [ ${#missing_build[@]} -gt 0 ]; then
    log "installing build-only packages ${missing_build[*]}"
    apt_install "${missing_build[@]}"
fi

# --- the service user -------------------------------------------------------------------------------------------
in_root getent group gpio >/dev/null || in_root groupadd --system gpio
if ! in_root getent passwd intercom >/dev/null; then
    in_root useradd --system --user-group --home-dir /var/lib/intercom --no-create-home \
        --shell /usr/sbin/nologin --comment "Doorbell intercom" intercom
fi
in_root usermod --groups gpio,audio,video intercom  # exactly these, also when the user existed
install -d -m 750 -o root -g "$(in_root getent group intercom | cut -d: -f3)" "$root/etc/intercom"

# --- the virtualenv -----------------------------------------------------------------------------------------------
staging=$root/tmp/intercom-install
rm -rf "$staging"
mkdir -p "$staging"
cleanup+=("rm -rf '$staging'")
if [ -n "${INTERCOM_WHEEL:-}" ]; then
    cp "$INTERCOM_WHEEL" "$staging/"
else
    # From a clean copy of the sources: an in-tree build would reuse build/lib, which keeps modules deleted since.
    log "building the intercom wheel from $repo"
    source_copy=$(mktemp -d)
    cleanup+=("rm -rf '$source_copy'")
    (cd "$repo" && tar --exclude=__pycache__ --exclude='*.pyc' -cf - pyproject.toml README.md intercom) \
        | tar -C "$source_copy" -xf -
    python3 -m pip wheel --quiet --disable-pip-version-check --no-deps --wheel-dir "$staging" "$source_copy"
fi
wheel=$(cd "$staging" && ls intercom-*.whl)
pip_cache=(--no-cache-dir)
if [ -n "${INTERCOM_PIP_CACHE:-}" ]; then
    mkdir -p "$INTERCOM_PIP_CACHE"
    mount_into_root bind "$INTERCOM_PIP_CACHE" /var/cache/intercom-pip
    pip_cache=(--cache-dir /var/cache/intercom-pip)
fi
# pip in the root trusts the build host's certificate authorities (a build host behind a TLS-inspecting proxy has
# its own); the image keeps Debian's.
pip_env=()  # as environment variables, so that pip's build subprocesses get them too
if [ -r /etc/ssl/certs/ca-certificates.crt ]; then
    cp /etc/ssl/certs/ca-certificates.crt "$staging/host-ca.crt"
    pip_env+=(PIP_CERT=/tmp/intercom-install/host-ca.crt)
fi
extra=()
# gpiozero's lgpio pin factory (the only one that works on a Pi 5): Raspberry Pi OS has python3-lgpio; Debian
# does not, so take PyPI's wheel there.
in_root python3 -c 'import lgpio' 2>/dev/null || extra+=(lgpio)
log "installing $wheel ${extra[*]} and its dependencies into $venv (this compiles pyalsaaudio; takes minutes under emulation)"
rm -rf "${root:?}$venv"
in_root python3 -m venv --system-site-packages "$venv"
in_root env "${pip_env[@]}" "$venv/bin/pip" install --quiet --disable-pip-version-check --no-warn-script-location --prefer-binary --use-pep517 \
    "${pip_cache[@]}" "/tmp/intercom-install/$wheel" "${extra[@]}"
in_root "$venv/bin/python3" -c 'import intercom.service.bootconfig, alsaaudio, aiortc, nio, gpiozero, numpy'
log "venv ok: $(in_root "$venv/bin/python3" -c 'import sys, aiortc, nio; print("python", sys.version.split()[0], "aiortc", aiortc.__version__)')"

if [ "${INTERCOM_PURGE_BUILD_DEPS:-0}" = 1 ]; then purge=("${build_deps[@]}"); else purge=("${missing_build[@]}"); fi
if [ ${#purge[@]} -gt 0 ]; then
    log "removing build-only packages ${purge[*]}"
    in_root apt-get purge -y -qq --autoremove "${purge[@]}" >/dev/null
fi

# --- files and units --------------------------------------------------------------------------------------------
install -D -m 644 "$repo/systemd/intercom.service" "$root/etc/systemd/system/intercom.service"
(cd "$here/overlay" && find . -type f) | while read -r file; do
    mode=644
    [ -x "$here/overlay/$file" ] && mode=755
    install -D -m "$mode" "$here/overlay/$file" "$root/${file#./}"
done
install -d "$root/boot/firmware"
install -m 644 "$here/intercom.toml.example" "$root/boot/firmware/intercom.toml.example"

in_root systemctl enable intercom.service intercom-boot-config.service intercom-grow-rootfs.service \
    intercom-ssh-switch.service intercom-ssh-keygen.service intercom-boot-test.service NetworkManager.service
in_root systemctl disable ssh.service
in_root systemctl is-enabled ssh.service >/dev/null && die "ssh.service is still enabled"

# --- per-card identity: made on first boot --------------------------------------------------------------------------
rm -f "$root"/etc/ssh/ssh_host_*
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
if [ -d "$root/var/lib/dbus" ]; then ln -s /etc/machine-id "$root/var/lib/dbus/machine-id"; fi
echo "$hostname" > "$root/etc/hostname"
if grep -q '^127\.0\.1\.1' "$root/etc/hosts" 2>/dev/null; then
    sed -i "s/^127\.0\.1\.1.*/127.0.1.1\t$hostname/" "$root/etc/hosts"
else
    printf '127.0.1.1\t%s\n' "$hostname" >> "$root/etc/hosts"
fi
log "done: intercom in $venv, units enabled, hostname $hostname"
