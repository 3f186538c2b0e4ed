#!/usr/bin/env bash
# Checks the guest harness itself (not the daemon): boots the guest a few times and verifies
# that the topology and the kernel's sysfs behaviour are what README.md documents, that exit
# statuses, arguments and environment travel intact, that .NET runs inside, and that a hung
# guest is killed. Ends with the line "N passed, N failed"; exits non-zero if any case failed.
#
# Usage: selftest.sh [WORKDIR]   (default: a fresh temporary folder, removed when all pass)
set -euo pipefail

GUEST_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WORK=${1:-$(mktemp -d /tmp/pcipt-guest-selftest.XXXXXX)}
mkdir -p "$WORK"
RUN=$GUEST_DIR/run-guest.sh

passed=0
failed=0
check() { # NAME EXPECTED-STATUS ACTUAL-STATUS [EXTRA-CONDITION-RESULT]
  local name=$1 want=$2 got=$3 extra=${4:-0}
  if [[ $got == "$want" && $extra == 0 ]]; then
    echo "selftest: PASS $name"
    passed=$((passed + 1))
  else
    echo "selftest: FAIL $name (status $got, expected $want; extra check $extra)"
    failed=$((failed + 1))
  fi
}
run() { # RESULTS-SUBDIR ARGS... ; prints nothing, returns run-guest.sh's status
  local dir=$WORK/$1
  shift
  local rc=0
  "$RUN" --quiet --results "$dir" "$@" >/dev/null 2>"$dir.stderr" || rc=$?
  return "$rc"
}

# Warm the cache first so that no case below pays for a download or an initramfs build.
"$GUEST_DIR/prepare.sh" >/dev/null

# 1. Topology, bind/restore cycle and shared-group behaviour, checked from a shell in the guest.
rc=0; run sysfs --timeout 600 -- "$GUEST_DIR/selftest-in-guest.sh" || rc=$?
check "topology and sysfs bind/restore in the guest" 0 "$rc"
[[ -f $WORK/sysfs/selftest.txt ]] && sed 's/^/    /' "$WORK/sysfs/selftest.txt"

# 2. The command's exit status is the script's.
rc=0; run exit3 -- /bin/sh -c 'exit 3' || rc=$?
check "exit status 3 passes through" 3 "$rc" "$([[ $(cat "$WORK/exit3/exit-code" 2>/dev/null) == 3 ]]; echo $?)"

# 3. Arguments and --env values with spaces and quotes arrive unchanged, --cwd is honoured,
#    and files written to /results reach the host.
rc=0
# shellcheck disable=SC2016 # the $ signs are meant literally: they must arrive unexpanded
run args --cwd /usr/share --env "PCIPT_SELFTEST=two  spaces 'and' \"quotes\"" -- \
  /bin/bash -c 'printf "%s\n" "$PWD" "$@" "$PCIPT_SELFTEST" >"$PCIPT_RESULTS/args.txt"' \
  _ 'a b' '$HOME' "it's" '' || rc=$?
# shellcheck disable=SC2016
expected=$(printf '%s\n' /usr/share 'a b' '$HOME' "it's" '' "two  spaces 'and' \"quotes\"")
check "arguments, environment and cwd survive" 0 "$rc" \
  "$([[ $(cat "$WORK/args/args.txt" 2>/dev/null) == "$expected" ]]; echo $?)"

# 4. .NET runs in the guest (host SDK through the shared root).
rc=0; run dotnet --timeout 600 -- /usr/bin/dotnet --info || rc=$?
check "dotnet --info in the guest" 0 "$rc" \
  "$(grep -q 'Microsoft.NETCore.App' "$WORK/dotnet/console.log"; echo $?)"

# 5. A hung command is killed at --timeout with status 124 and a message.
rc=0; run hang --timeout 15 -- /bin/sleep 1000 || rc=$?
check "hung guest killed at --timeout" 124 "$rc" \
  "$(grep -q 'did not finish within 15s' "$WORK/hang.stderr"; echo $?)"

echo "$passed passed, $failed failed"
if ((failed == 0)) && (($# == 0)); then
  rm -rf "$WORK"
else
  echo "selftest: files kept in $WORK"
fi
((failed == 0))
