#!/usr/bin/env bash
# Runs INSIDE the guest (started by selftest.sh through run-guest.sh). Checks that the guest
# looks the way README.md says and that the kernel behaves the way the daemon relies on, using
# nothing but sysfs writes from the shell:
#   1. topology: every test device at its address, on its boot driver, in the expected group;
#   2. bind cycle on 0000:00:02.0 (alone in its group): to vfio-pci and back to e1000e;
#   3. shared group: 0000:03:01.0 (e1000) shares its group with a display held by bochs-drm.
# Prints timings and writes a summary to $PCIPT_RESULTS/selftest.txt. Exits non-zero on the
# first deviation.
set -euo pipefail

SUMMARY=${PCIPT_RESULTS:-/tmp}/selftest.txt
: >"$SUMMARY"
say() { echo "selftest: $*" | tee -a "$SUMMARY"; }
fail() { say "FAIL: $*"; exit 1; }

dev() { echo "/sys/bus/pci/devices/$1"; }
driver_of() { local l; l=$(readlink "$(dev "$1")/driver" 2>/dev/null) && basename "$l" || echo none; }
group_of() { basename "$(readlink "$(dev "$1")/iommu_group")"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
# Writes $2 to sysfs file $1 and reports the kernel's answer (OK or the error) instead of dying:
# some writes are expected to fail.
write() {
  local err
  if err=$( { printf '%s' "$2" >"$1"; } 2>&1); then echo OK; else echo "ERR(${err##*: })"; fi
}

# --- 1. topology ------------------------------------------------------------------------------
# address, boot driver, name of the group it must share ("own" = nobody else in it)
expect=(
  "0000:00:02.0 e1000e own"
  "0000:01:00.0 e1000e own"
  "0000:02:00.0 e1000e mf"
  "0000:02:00.1 e1000e mf"
  "0000:03:01.0 e1000 dmi"
  "0000:03:02.0 bochs-drm dmi"
  "0000:00:06.0 virtio-pci own"
  "0000:00:07.0 virtio-pci own"
)
declare -A group_by_tag=()
for line in "${expect[@]}"; do
  read -r addr drv tag <<<"$line"
  [[ -e $(dev "$addr") ]] || fail "$addr missing"
  [[ $(driver_of "$addr") == "$drv" ]] || fail "$addr is on $(driver_of "$addr"), expected $drv"
  g=$(group_of "$addr")
  members=$(ls "/sys/kernel/iommu_groups/$g/devices" | tr '\n' ' ')
  if [[ $tag == own ]]; then
    [[ $members == "$addr " ]] || fail "$addr should be alone in its group, group $g has $members"
  elif [[ -n ${group_by_tag[$tag]:-} ]]; then
    [[ ${group_by_tag[$tag]} == "$g" ]] || fail "$addr should share group ${group_by_tag[$tag]}, is in $g"
  else
    group_by_tag[$tag]=$g
  fi
  say "topology: $addr driver=$drv group=$g members: $members"
done
[[ $(cat /sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts 2>/dev/null) == N ]] \
  || fail "allow_unsafe_interrupts should stay N (interrupt remapping is on)"
[[ $(cat "$(dev 0000:00:02.0)/driver_override") == "(null)" ]] || fail "driver_override not (null)"

# --- 2. bind cycle, device alone in its group -------------------------------------------------
A=0000:00:02.0
G=$(group_of $A)
net_before=$(ls "$(dev $A)/net")
# Timed with plain writes (no subshell per write: a fork costs milliseconds under emulation).
usecs() { local t=${EPOCHREALTIME/./}; echo "${t#0}"; }
bind_times=() restore_times=()
for round in 1 2 3 4 5; do
  t0=$(usecs)
  echo vfio-pci >"$(dev $A)/driver_override"
  echo $A >"$(dev $A)/driver/unbind"
  echo $A >/sys/bus/pci/drivers_probe
  t1=$(usecs)
  bind_times+=($(((t1 - t0) / 1000)))
  [[ $(driver_of $A) == vfio-pci ]] || fail "$A not on vfio-pci after bind (round $round)"
  [[ -c /dev/vfio/$G ]] || fail "/dev/vfio/$G missing after bind"
  [[ ! -e /sys/class/net/$net_before ]] || fail "$net_before still present while on vfio-pci"
  ((round > 1)) || say "bind $A: driver=$(driver_of $A), $(ls /dev/vfio | tr '\n' ' ')in /dev/vfio, $net_before gone"

  t0=$(usecs)
  echo >"$(dev $A)/driver_override"
  echo $A >"$(dev $A)/driver/unbind"
  echo $A >/sys/bus/pci/drivers_probe
  t1=$(usecs)
  restore_times+=($(((t1 - t0) / 1000)))
  [[ $(driver_of $A) == e1000e ]] || fail "$A not back on e1000e (round $round)"
  [[ $(cat "$(dev $A)/driver_override") == "(null)" ]] || fail "driver_override not cleared"
  [[ ! -e /dev/vfio/$G ]] || fail "/dev/vfio/$G still present after restore"
  net_after=$(ls "$(dev $A)/net")
  [[ -e /sys/class/net/$net_after ]] || fail "no net interface after restore"
  ((round > 1)) || say "restore $A: driver=$(driver_of $A), net interface $net_after back (was $net_before), /dev/vfio/$G gone"
done
say "bind $A (3 writes) ms: ${bind_times[*]}"
say "restore $A (3 writes) ms: ${restore_times[*]}"

# --- 3. shared group with a display held by bochs-drm -----------------------------------------
E=0000:03:01.0
D=0000:03:02.0
G=$(group_of $E)
r1=$(write "$(dev $E)/driver_override" vfio-pci)
r2=$(write "$(dev $E)/driver/unbind" $E)
r3=$(write /sys/bus/pci/drivers_probe $E)
say "shared-group bind $E: override=$r1 unbind=$r2 probe=$r3 driver=$(driver_of $E)" \
  "display=$(driver_of $D); /dev/vfio holds: $(ls /dev/vfio | tr '\n' ' ')"
# The group is only usable when every endpoint in it is on vfio-pci (or has no driver): the
# VFIO group status says whether the kernel considers it viable.
viability() {
  python3 - "$1" <<'PY' 2>&1 || true
import fcntl, os, struct, sys
VFIO_GROUP_GET_STATUS, VFIO_GROUP_SET_CONTAINER = 0x3B67, 0x3B68
try:
    g = os.open(f"/dev/vfio/{sys.argv[1]}", os.O_RDWR)
except OSError as e:
    print(f"open /dev/vfio/{sys.argv[1]}: {e.strerror}"); sys.exit()
buf = bytearray(struct.pack("II", 8, 0))
fcntl.ioctl(g, VFIO_GROUP_GET_STATUS, buf)
flags = struct.unpack("II", buf)[1]
c = os.open("/dev/vfio/vfio", os.O_RDWR)
try:
    fcntl.ioctl(g, VFIO_GROUP_SET_CONTAINER, struct.pack("i", c)); sc = "OK"
except OSError as e:
    sc = e.strerror
print(f"viable={'yes' if flags & 1 else 'no'} set_container={sc}")
PY
}
say "shared-group with display on bochs-drm: $(viability "$G")"

# Hand the display over too: now the whole group is on vfio-pci.
r1=$(write "$(dev $D)/driver_override" vfio-pci)
r2=$(write "$(dev $D)/driver/unbind" $D)
r3=$(write /sys/bus/pci/drivers_probe $D)
say "shared-group bind $D: override=$r1 unbind=$r2 probe=$r3 driver=$(driver_of $D)"
say "shared-group with both on vfio-pci: $(viability "$G")"

# Restore both to their host drivers.
for X in $E $D; do
  write "$(dev "$X")/driver_override" $'\n' >/dev/null
  write "$(dev "$X")/driver/unbind" "$X" >/dev/null
  write /sys/bus/pci/drivers_probe "$X" >/dev/null
done
say "shared-group restore: $E=$(driver_of $E) $D=$(driver_of $D)"
[[ $(driver_of $E) == e1000 && $(driver_of $D) == bochs-drm ]] || fail "shared group not restored"
say "PASS"
