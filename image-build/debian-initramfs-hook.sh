#!/usr/bin/env bash
# mmdebstrap essential-hook for the Debian base: configures initramfs-tools BEFORE the kernel is installed, so that
# the initrd is made once, small and zstd-compressed. MODULES=list (the default) packs only the named modules,
# which makes mkinitramfs take about 1 minute instead of about 12 under qemu-user; "most" keeps Debian's default.
# Usage: debian-initramfs-hook.sh ROOTFS_DIR list|most MODULE...
set -euo pipefail
root=${1:?usage: debian-initramfs-hook.sh ROOTFS_DIR list|most MODULE...}
mode=${2:?}
shift 2
mkdir -p "$root/etc/initramfs-tools/conf.d" "$root/usr/share/initramfs-tools/modules.d"
{
    echo "# intercom image: see image-build/debian-initramfs-hook.sh"
    echo "COMPRESS=zstd"
    if [ "$mode" = list ]; then echo "MODULES=list"; fi
} > "$root/etc/initramfs-tools/conf.d/intercom.conf"
if [ "$mode" = list ]; then printf '%s\n' "$@" > "$root/usr/share/initramfs-tools/modules.d/intercom"; fi
