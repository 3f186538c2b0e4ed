#!/usr/bin/env bash
# Boots Debian's kernel under QEMU (TCG, q35, emulated Intel IOMMU with interrupt remapping),
# runs one command inside it as root against the guest's real /sys, /dev and /proc, and exits
# with that command's exit status.
#
# Usage:
#   run-guest.sh --results DIR [--timeout SECONDS] [--env K=V]... [--cwd DIR] [--quiet] \
#                -- COMMAND [ARGS...]
#
#   --results DIR   Host folder shared writable with the guest, mounted there at /results
#                   ($PCIPT_RESULTS). Also receives this run's files: cmd.sh (the command as
#                   the guest runs it), console.log (serial console), exit-code, qemu.stderr,
#                   and guest-error when the guest's own setup failed.
#   --timeout S     Kill the guest after S seconds (default 600), counted from QEMU's start,
#                   and fail with 124.
#   --env K=V       Extra environment for COMMAND (repeatable); overrides the guest defaults.
#   --cwd DIR       Working directory of COMMAND (default: the caller's current directory; the
#                   guest sees the host's file tree under the same paths).
#   --quiet         Do not stream the console to stdout (it is still in DIR/console.log).
#
# COMMAND sees the host's root file system read-only with a RAM overlay on top (writes succeed
# but vanish with the guest); only /results reaches the host.
#
# Exit status: COMMAND's status; 124 when the guest timed out; 125 when the harness itself failed
# (QEMU could not start, the guest setup failed, or the guest stopped without a verdict). Every
# failure of the harness prints a message on stderr: this script never reports a skip.
#
# Environment: PCIPT_GUEST_KERNEL and PCIPT_GUEST_INITRAMFS, when both set, are used instead of
# running prepare.sh (which is otherwise run first and is fast when its cache is warm).
# PCIPT_GUEST_APPEND is appended to the kernel command line (e.g. "loglevel=7" to see the boot).
set -euo pipefail

GUEST_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

die() { printf 'run-guest.sh: ERROR: %s\n' "$*" >&2; exit 125; }
usage() {
  sed -n '/^# Usage:/,/^# Exit status/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' | head -n -1 >&2
  exit "${1:-125}"
}

RESULTS=""
TIMEOUT=600
CWD=$PWD
QUIET=0
ENVS=()
while (($#)); do
  case $1 in
    --results) [[ $# -ge 2 ]] || usage; RESULTS=$2; shift 2 ;;
    --timeout) [[ $# -ge 2 ]] || usage; TIMEOUT=$2; shift 2 ;;
    --env) [[ $# -ge 2 ]] || usage; ENVS+=("$2"); shift 2 ;;
    --cwd) [[ $# -ge 2 ]] || usage; CWD=$2; shift 2 ;;
    --quiet) QUIET=1; shift ;;
    --) shift; break ;;
    -h | --help) usage 0 ;;
    *) printf 'run-guest.sh: unknown argument %q\n' "$1" >&2; usage ;;
  esac
done
(($#)) || { echo "run-guest.sh: no COMMAND given" >&2; usage; }
[[ -n $RESULTS ]] || { echo "run-guest.sh: --results DIR is required" >&2; usage; }
[[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "--timeout must be a positive number of seconds, got '$TIMEOUT'"
[[ $CWD == /* ]] || die "--cwd must be an absolute path, got '$CWD'"
for kv in "${ENVS[@]}"; do
  [[ $kv =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env needs NAME=VALUE, got '$kv'"
done

# --- kernel and initramfs ----------------------------------------------------------------------
if [[ -n ${PCIPT_GUEST_KERNEL:-} && -n ${PCIPT_GUEST_INITRAMFS:-} ]]; then
  KERNEL=$PCIPT_GUEST_KERNEL
  INITRAMFS=$PCIPT_GUEST_INITRAMFS
else
  prep=$("$GUEST_DIR/prepare.sh") || die "prepare.sh failed"
  KERNEL=$(sed -n 's/^PCIPT_GUEST_KERNEL=//p' <<<"$prep")
  INITRAMFS=$(sed -n 's/^PCIPT_GUEST_INITRAMFS=//p' <<<"$prep")
fi
command -v qemu-system-x86_64 >/dev/null \
  || die "qemu-system-x86_64 not found (run $GUEST_DIR/prepare.sh, which installs it)"
[[ -f $KERNEL ]] || die "kernel not found: '$KERNEL'"
[[ -f $INITRAMFS ]] || die "initramfs not found: '$INITRAMFS'"

# --- results folder and the command file -------------------------------------------------------
mkdir -p "$RESULTS" || die "cannot create $RESULTS"
RESULTS=$(cd "$RESULTS" && pwd -P)
# The guest gets write access to this folder: never to the whole host.
[[ $RESULTS != / ]] || die "--results must not be /"
# Only this script's own files are cleared: a stale exit-code must never pass for a new verdict.
rm -f "$RESULTS"/{cmd.sh,console.log,exit-code,qemu.stderr,guest-error}

# The command travels as a bash script on the results share rather than on the kernel command
# line: %q quoting keeps arguments with spaces, quotes or newlines intact, and bash is there
# because the guest runs it inside the host's own root.
{
  echo '#!/bin/bash'
  echo '# Written by run-guest.sh: the command it was asked to run, as the guest runs it.'
  for kv in "${ENVS[@]}"; do
    printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}"
  done
  printf 'cd -- %q || { echo "run-guest: cannot enter %q" >&2; exit 125; }\n' "$CWD" "$CWD"
  printf 'exec'
  printf ' %q' "$@"
  printf '\n'
} >"$RESULTS/cmd.sh"

# QEMU option values are comma-separated: a comma in the path must be doubled.
RESULTS_OPT=${RESULTS//,/,,}

# --- the machine -------------------------------------------------------------------------------
# Fixed bus/addr values keep guest PCI addresses stable across QEMU versions and runs; the table
# of the resulting addresses and IOMMU groups is in README.md beside this script.
#   00:02.0        e1000e alone on the root bus                 own group
#   00:03.0 -> 01:00.0  e1000e behind its own root port         own group
#   00:04.0 -> 02:00.0 + 02:00.1  multifunction e1000e pair     one group for both
#   00:05.0 -> 03:01.0 e1000 + 03:02.0 bochs-display behind a DMI-to-PCI bridge: one group
#   00:06.0, 00:07.0  virtio-9p: host root, results
# romfile= (empty) skips the NICs' and display's option ROMs: nothing boots from them, and
# SeaBIOS would otherwise load and run each under emulation. The NICs have no netdev: nothing in
# the tests sends packets, and the guest must not reach any network.
# shellcheck disable=SC2054 # the commas are QEMU's option syntax, not array separators
QEMU_ARGS=(
  -machine q35,accel=tcg
  -cpu max -smp 2 -m 2048
  # Nothing implicit (default NIC, VGA, floppy, CD-ROM, monitor): the topology is what is below.
  -nodefaults -no-user-config -display none
  # panic=-1 on the command line plus -no-reboot: a guest panic ends QEMU instead of looping.
  -no-reboot
  # The IOMMU first, before the devices it translates for. intremap=on: with interrupt
  # remapping vfio needs no allow_unsafe_interrupts. caching-mode is not needed: it only
  # matters when QEMU itself assigns host devices through VFIO, which never happens here.
  -device intel-iommu,intremap=on
  -kernel "$KERNEL"
  -initrd "$INITRAMFS"
  -append "console=ttyS0 intel_iommu=on iommu=pt panic=-1 quiet${PCIPT_GUEST_APPEND:+ $PCIPT_GUEST_APPEND}"
  -chardev "file,id=console,path=$RESULTS_OPT/console.log"
  -serial chardev:console
  # Verdict channel: a byte written to port 0xf4 exits QEMU with (byte << 1) | 1.
  -device isa-debug-exit,iobase=0xf4,iosize=0x04
  # a) alone in its group on the root bus
  -device e1000e,id=nic_solo,bus=pcie.0,addr=0x2,romfile=
  # d) behind its own PCIe root port
  -device pcie-root-port,id=rp1,bus=pcie.0,addr=0x3,chassis=1,slot=1
  -device e1000e,id=nic_rp,bus=rp1,addr=0x0,romfile=
  # c) multifunction pair behind a root port: no ACS between the functions, so one group
  -device pcie-root-port,id=rp2,bus=pcie.0,addr=0x4,chassis=2,slot=2
  -device e1000e,id=nic_mf0,bus=rp2,addr=0x0.0x0,multifunction=on,romfile=
  -device e1000e,id=nic_mf1,bus=rp2,addr=0x0.0x1,romfile=
  # b) conventional PCI behind a DMI-to-PCI bridge: both devices alias to the bridge, one group
  -device i82801b11-bridge,id=dmi,bus=pcie.0,addr=0x5
  -device e1000,id=nic_legacy,bus=dmi,addr=0x1,romfile=
  -device bochs-display,id=display,bus=dmi,addr=0x2,romfile=
  # e) the harness's own transport: host root read-only, results writable
  -fsdev local,id=fs_hostroot,path=/,security_model=none,readonly=on,multidevs=remap
  -device virtio-9p-pci,fsdev=fs_hostroot,mount_tag=hostroot,bus=pcie.0,addr=0x6
  -fsdev "local,id=fs_results,path=$RESULTS_OPT,security_model=none"
  -device virtio-9p-pci,fsdev=fs_results,mount_tag=results,bus=pcie.0,addr=0x7
)

QEMU_PID=""
TAIL_PID=""
# shellcheck disable=SC2317 # called through the trap
cleanup() {
  if [[ -n $QEMU_PID ]]; then kill -KILL "$QEMU_PID" 2>/dev/null || true; fi
  if [[ -n $TAIL_PID ]]; then kill "$TAIL_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

: >"$RESULTS/console.log"
START=$SECONDS
qemu-system-x86_64 "${QEMU_ARGS[@]}" </dev/null 2>"$RESULTS/qemu.stderr" &
QEMU_PID=$!
if ((QUIET == 0)); then
  tail --pid="$QEMU_PID" -s 0.2 -n +1 -F "$RESULTS/console.log" 2>/dev/null &
  TAIL_PID=$!
fi

# Our own deadline rather than timeout(1): its 124/137 could be mistaken for a QEMU status.
TIMED_OUT=0
while kill -0 "$QEMU_PID" 2>/dev/null; do
  if ((SECONDS - START >= TIMEOUT)); then
    TIMED_OUT=1
    kill -TERM "$QEMU_PID" 2>/dev/null || true
    sleep 2
    kill -KILL "$QEMU_PID" 2>/dev/null || true
    break
  fi
  sleep 0.2
done
QEMU_RC=0
wait "$QEMU_PID" || QEMU_RC=$?
QEMU_PID=""
if [[ -n $TAIL_PID ]]; then
  wait "$TAIL_PID" 2>/dev/null || true
  TAIL_PID=""
fi
ELAPSED=$((SECONDS - START))

console_tail() {
  echo "---- last 50 lines of $RESULTS/console.log ----" >&2
  tail -n 50 "$RESULTS/console.log" >&2 || true
  # QEMU warns that the NICs have no network peer on every run: noise, not a cause.
  local qemu_err
  qemu_err=$(grep -v 'has no peer$' "$RESULTS/qemu.stderr" 2>/dev/null | tail -n 20 || true)
  if [[ -n $qemu_err ]]; then
    echo "---- $RESULTS/qemu.stderr ----" >&2
    echo "$qemu_err" >&2
  fi
  echo "----" >&2
}
# Fails the run loudly: message, the end of the console, and the status in exit-code too so a
# caller reading only the results folder sees the failure as well.
harness_fail() {
  local code=$1
  shift
  echo "run-guest.sh: FAILED: $*" >&2
  console_tail
  echo "$code" >"$RESULTS/exit-code"
  exit "$code"
}

if ((TIMED_OUT)); then
  harness_fail 124 "guest did not finish within ${TIMEOUT}s; QEMU killed."
fi

if [[ -s $RESULTS/guest-error ]] || grep -q '^pcipt-guest: ERROR' "$RESULTS/console.log"; then
  harness_fail 125 "the guest's own setup failed (see the pcipt-guest: ERROR line below)."
fi

# The verdict: exit-code (written by the guest before it unmounted the share) is exact; QEMU's
# own status, (byte << 1) | 1 from isa-debug-exit, must agree with it. QEMU exits 1 both for
# "byte 0" and for "could not start", so a status alone, without the guest's console marker,
# never counts as a pass.
CODE=""
if [[ -f $RESULTS/exit-code ]]; then
  CODE=$(tr -d '[:space:]' <"$RESULTS/exit-code")
  [[ $CODE =~ ^[0-9]+$ ]] || die "unreadable exit-code '$CODE' in $RESULTS"
fi
MARKER=$(sed -n 's/^pcipt-guest: \[[0-9.]*s\] command exited with status \([0-9]*\).*/\1/p' \
  "$RESULTS/console.log" | tail -n 1 | tr -d '\r')
if [[ -z $CODE && -n $MARKER ]]; then
  CODE=$MARKER
  echo "$CODE" >"$RESULTS/exit-code"
fi
if [[ -z $CODE ]]; then
  harness_fail 125 "QEMU exited with status $QEMU_RC after ${ELAPSED}s without a verdict from" \
    "the guest (QEMU did not start, or the guest crashed or powered off early)."
fi
if ((QEMU_RC % 2 == 1)) && (((QEMU_RC - 1) / 2 != (CODE & 127))); then
  echo "run-guest.sh: warning: QEMU status $QEMU_RC does not match exit-code $CODE" >&2
fi
echo "run-guest.sh: command exited with status $CODE (guest ran ${ELAPSED}s)" >&2
exit "$CODE"
