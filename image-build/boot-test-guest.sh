#!/bin/sh
# Runs INSIDE the image booted by boot-test (copied onto the boot partition, started by intercom-boot-test.service
# only when the kernel command line has intercom.boottest=1). Checks the boot and reports on the console
# ("BOOTTEST: ..." lines, then "BOOTTEST-RESULT: PASS" or "FAIL"), then powers the machine off. boot-test boots
# the card twice (the phase is in intercom-boot-test.phase on the card):
#   1. first boot with a good intercom.toml: imported, secrets off the card, service started in its sandbox
#      (seccomp, device list, limits, systemd-analyze security), first-boot work done;
#   2. the same card with a broken intercom.toml: nothing changed, errors reported, the service runs on the old config.
# The expected values match the intercom.toml files that boot-test writes.
exec > /dev/console 2>&1
matrix_password="boot-test door password 7f3a"
wifi_password="boot-test wifi 91c2"
failed=0
say() { echo "BOOTTEST: $*"; }
check() {  # check DESCRIPTION COMMAND...
    description=$1
    shift
    if "$@"; then say "ok   $description"; else say "FAIL $description"; failed=$((failed + 1)); fi
}
wait_for() {  # wait_for SECONDS COMMAND...: true once COMMAND succeeds
    limit=$1
    shift
    waited=0
    until "$@"; do
        [ "$waited" -ge "$limit" ] && return 1
        sleep 2
        waited=$((waited + 2))
    done
}
intercom_log() { journalctl -b -u intercom.service -o cat --no-pager; }
tried_homeserver() { intercom_log | grep -q "Matrix: offline, the homeserver"; }
is_mode() { [ "$(stat -c '%a %U:%G' "$1")" = "$2" ]; }
has_line() { grep -qxF "$2" "$1"; }
lacks() { ! grep -qF "$2" "$1"; }
absent() { [ ! -e "$1" ]; }
gid() { getent group "$1" | cut -d: -f3; }
proc_status() { grep "^$2:" "/proc/$1/status" | cut -f2; }  # proc_status PID FIELD
unit_property() { systemctl show -p "$1" --value intercom.service; }
fingerprints() {  # what must survive a reboot
    sha256sum /etc/intercom/intercom.toml /etc/intercom/secrets/password /etc/machine-id \
        /etc/ssh/ssh_host_ed25519_key.pub /etc/NetworkManager/system-connections/intercom-wifi.nmconnection
}
journal_has_error() { journalctl -b -u intercom-boot-config.service -p err -o cat | grep -q "$1"; }
same_fingerprints() { fingerprints | cmp -s - "$state/fingerprints"; }
phase=$(cat /boot/firmware/intercom-boot-test.phase 2>/dev/null || echo 1)
state=/var/lib/intercom-boot-test

say "boot $phase started at uptime $(cut -d' ' -f1 /proc/uptime) s"
check "intercom.service logged 'intercom starting' and then tried the homeserver (offline, retrying)" \
    wait_for 900 tried_homeserver
check "first-boot work finished (root grown, ssh host keys made)" \
    wait_for 300 test -e /var/lib/intercom-image/rootfs-grown -a -e /etc/ssh/ssh_host_ed25519_key

if [ "$phase" = 1 ]; then
# The config import from the boot partition.
check "/etc/intercom/intercom.toml written, mode 640 root:intercom" is_mode /etc/intercom/intercom.toml "640 root:intercom"
check "the Matrix password moved to /etc/intercom/secrets/password, mode 600 intercom:intercom" \
    is_mode /etc/intercom/secrets/password "600 intercom:intercom"
check "the secret file holds the password" has_line /etc/intercom/secrets/password "$matrix_password"
check "/etc/intercom/intercom.toml points at it" \
    has_line /etc/intercom/intercom.toml 'password_file = "/etc/intercom/secrets/password"'
check "the Wi-Fi profile written, mode 600 root:root" \
    is_mode /etc/NetworkManager/system-connections/intercom-wifi.nmconnection "600 root:root"
check "the Wi-Fi profile names the network" \
    has_line /etc/NetworkManager/system-connections/intercom-wifi.nmconnection "ssid=BootTestNet"
check "the host name is applied" test "$(hostname)" = boottest-door
check "intercom.toml is gone from the card" absent /boot/firmware/intercom.toml
check "the card's intercom.toml.applied exists" test -s /boot/firmware/intercom.toml.applied
check "the card's copy has no Matrix password" lacks /boot/firmware/intercom.toml.applied "$matrix_password"
check "the card's copy has no Wi-Fi password" lacks /boot/firmware/intercom.toml.applied "$wifi_password"
check "no errors file on the card" absent /boot/firmware/intercom-config-errors.txt

# The service.
check "intercom.service is running (activating until the homeserver answers), not restarted" \
    test "$(systemctl show -p ActiveState --value intercom.service) $(systemctl show -p NRestarts --value intercom.service)" = "activating 0"
pid=$(systemctl show -p MainPID --value intercom.service)
check "the service runs as user intercom" test "$(stat -c %U "/proc/$pid")" = intercom
groups_line=$(grep '^Groups:' "/proc/$pid/status" | cut -f2 | tr ' ' '\n' | sed '/^$/d' | sort -n | tr '\n' ' ')
expected_groups=$(printf '%s\n' "$(gid intercom)" "$(gid gpio)" "$(gid audio)" "$(gid video)" | sort -n | tr '\n' ' ')
check "its groups are exactly intercom, gpio, audio, video ($groups_line)" test "$groups_line" = "$expected_groups"
check "its sandbox is on: system call filter (Seccomp: 2), no new privileges (NoNewPrivs: 1)" \
    test "$(proc_status "$pid" Seccomp) $(proc_status "$pid" NoNewPrivs)" = "2 1"
limits="$(unit_property DevicePolicy) $(unit_property MemoryMax) $(unit_property TasksMax)"
check "device list closed, memory and task limits set (DevicePolicy MemoryMax TasksMax: $limits)" \
    test "$limits" = "closed 335544320 128"
exposure=$(systemd-analyze security --no-pager intercom.service 2>/dev/null \
    | sed -n 's/.*Overall exposure level for intercom.service: \([0-9.]*\).*/\1/p')
check "systemd-analyze security intercom.service (with the image's drop-in) rates it 2.5 or lower: ${exposure:-no answer}" \
    awk -v e="$exposure" 'BEGIN { exit !(e != "" && e + 0 <= 2.5) }'
say "intercom.service idle: $(systemctl show -p MemoryCurrent -p TasksCurrent intercom.service | tr '\n' ' ')"
journalctl -b _PID=1 -o cat --no-pager | grep -a "intercom.service:" | head -5 | while IFS= read -r line; do
    say "systemd about intercom.service: $line"
done
failed_units=$(systemctl --failed --no-legend --plain)
check "no failed unit${failed_units:+: $failed_units}" test -z "$failed_units"

# First boot of this card.
check "ssh turned on by the 'ssh' file, which is then removed" test "$(systemctl is-active ssh.service)" = active
check "the 'ssh' file is gone" absent /boot/firmware/ssh
check "a machine-id of its own" grep -qxE '[0-9a-f]{32}' /etc/machine-id
part=$(basename "$(readlink -f "$(findmnt -n -o SOURCE /)")")
disk=$(basename "$(readlink -f "/sys/class/block/$part/..")")
end=$(( $(cat "/sys/class/block/$part/start") + $(cat "/sys/class/block/$part/size") ))
check "the root partition grew to the end of the disk ($end of $(cat "/sys/class/block/$disk/size") sectors)" \
    test $(( $(cat "/sys/class/block/$disk/size") - end )) -lt 4096
say "root file system: $(df -h --output=size,used,avail / | tail -1)"
say "intercom: $(intercom_log | grep -m1 'intercom starting')"
say "intercom: $(intercom_log | grep -m1 'Matrix: offline')"

mkdir -p "$state"
fingerprints > "$state/fingerprints"
else
check "intercom.toml was rejected: intercom-config-errors.txt on the card names matrix.owner and its fix" \
    grep -q 'intercom.toml: matrix.owner: "alice" is not a Matrix user ID; write it as @alice:example.org' \
    /boot/firmware/intercom-config-errors.txt
check "the rejected intercom.toml stays on the card to be fixed" test -s /boot/firmware/intercom.toml
check "the problem is in the journal at priority err" \
    journal_has_error matrix.owner
check "the marker for the service's LEDs names it" grep -q matrix.owner /run/intercom-boot-config/errors
check "the previous config, secret, Wi-Fi profile, machine-id and ssh host key are unchanged" \
    same_fingerprints
check "intercom.service runs on the previous config (activating, not restarted)" \
    test "$(systemctl show -p ActiveState --value intercom.service) $(systemctl show -p NRestarts --value intercom.service)" = "activating 0"
check "the host name is still the applied one" test "$(hostname)" = boottest-door
check "ssh is still on" test "$(systemctl is-active ssh.service)" = active
failed_units=$(systemctl --failed --no-legend --plain | cut -d' ' -f1 | tr '\n' ' ')
check "the only failed unit is intercom-boot-config.service (${failed_units})" \
    test "$failed_units" = "intercom-boot-config.service "
fi

starting=$(journalctl -b -u intercom.service -o short-monotonic --no-pager | grep -m1 "intercom starting" | sed 's/^\[ *\([0-9.]*\)\].*/\1/')
offline=$(journalctl -b -u intercom.service -o short-monotonic --no-pager | grep -m1 "Matrix: offline" | sed 's/^\[ *\([0-9.]*\)\].*/\1/')
imported=$(journalctl -b -u intercom-boot-config.service -o short-monotonic --no-pager | grep -m1 "applied intercom.toml" | sed 's/^\[ *\([0-9.]*\)\].*/\1/')
say "timing (seconds since boot): config imported ${imported:-?}, intercom starting ${starting:-?}, homeserver tried ${offline:-?}"
if [ "$failed" -gt 0 ]; then
    say "--- intercom.service log"
    intercom_log | tail -40
    say "--- failed units and the journal's end"
    systemctl --failed --no-pager
    journalctl -b -p warning --no-pager | tail -60
    echo "BOOTTEST-RESULT: FAIL boot $phase ($failed checks failed)"
else
    echo "BOOTTEST-RESULT: PASS boot $phase"
fi
sync
systemctl poweroff --no-block
