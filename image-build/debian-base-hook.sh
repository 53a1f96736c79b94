#!/usr/bin/env bash
# mmdebstrap customize-hook for the plain Debian base that build-image makes (Raspberry Pi OS builders do all of
# this themselves): boot files on /boot/firmware that find the root by label, fstab, a locked root account.
# Usage: debian-base-hook.sh ROOTFS_DIR
set -euo pipefail
root=${1:?usage: debian-base-hook.sh ROOTFS_DIR}

# raspi-firmware copies the kernel, initrd and device trees to /boot/firmware and writes cmdline.txt/config.txt from
# its hook; in a chroot it cannot guess the root partition, so name it and run the hook again (as Debian's own
# Raspberry Pi images do).
# Consoles: the Pi 3/4 serial port (GPIO 14/15) and the screen, which gets the boot messages.
sed -i -e 's/^#\?ROOTPART=.*/ROOTPART=LABEL=RASPIROOT/' -e 's/^#\?CONSOLES=.*/CONSOLES="ttyS1,115200 tty0"/' \
    "$root/etc/default/raspi-firmware"
for initrd in "$root"/boot/initrd.img-*; do
    version=${initrd##*/initrd.img-}
    chroot "$root" /etc/initramfs/post-update.d/z50-raspi-firmware "$version" "/boot/initrd.img-$version"
done
grep -q 'root=LABEL=RASPIROOT' "$root/boot/firmware/cmdline.txt" \
    || { echo "debian-base-hook: cmdline.txt does not name the root partition" >&2; exit 1; }
initrd_files=$(chroot "$root" lsinitramfs "/boot/initrd.img-$version")
for module in virtio_blk ext4 mmc_block sdhci_iproc; do
    grep -q "/${module//_/[-_]}\.ko" "$root/lib/modules/$version/modules.builtin" && continue
    grep -q "/${module//_/[-_]}\.ko" <<< "$initrd_files" \
        || { echo "debian-base-hook: the initrd lacks $module" >&2; exit 1; }
done

cat > "$root/etc/fstab" <<'FSTAB'
# The SD card: the FAT boot partition (firmware, kernel, intercom.toml) and the root file system, found by label.
LABEL=RASPIROOT  /               ext4  rw,noatime,errors=remount-ro  0  1
LABEL=RASPIFIRM  /boot/firmware  vfat  rw,noatime,umask=0077         0  2
FSTAB

# No password logins: the door is reached with an ssh key (see intercom.toml [system] ssh_authorized_keys).
chroot "$root" passwd --lock root >/dev/null
