#!/usr/bin/env bash
# Runs every test of the project from a fresh machine: installs what the tests need from Debian's
# packages (lspci and pci.ids for discovery checks; QEMU, busybox, kmod and cpio for the
# real-kernel suite), restores NuGet packages, runs the whole solution's tests and prints one
# plain summary line "N passed, N failed". Exit status 0 only when everything ran and passed.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

packages=(pciutils pci.ids qemu-system-x86 busybox-static kmod cpio)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "Installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

results="$repo/tests/.cache/test-results"
rm -rf "$results"
mkdir -p "$results"

dotnet restore PciPassthrough.sln --nologo -v q
set +e
dotnet test PciPassthrough.sln --no-restore --nologo \
  --logger "trx" --logger "console;verbosity=normal" --results-directory "$results" "$@"
status=$?
set -e

# Sum the counters of every test project's TRX report.
passed=0
failed=0
shopt -s nullglob
trx_files=("$results"/*.trx)
for trx in "${trx_files[@]}"; do
  counters=$(grep -o '<Counters [^>]*>' "$trx" | head -n 1)
  p=$(sed -n 's/.* passed="\([0-9]*\)".*/\1/p' <<<"$counters")
  f=$(sed -n 's/.* failed="\([0-9]*\)".*/\1/p' <<<"$counters")
  e=$(sed -n 's/.* error="\([0-9]*\)".*/\1/p' <<<"$counters")
  t=$(sed -n 's/.* timeout="\([0-9]*\)".*/\1/p' <<<"$counters")
  nr=$(sed -n 's/.* notExecuted="\([0-9]*\)".*/\1/p' <<<"$counters")
  passed=$((passed + ${p:-0}))
  failed=$((failed + ${f:-0} + ${e:-0} + ${t:-0} + ${nr:-0}))
done

if ((${#trx_files[@]} == 0)) || { ((status != 0)) && ((failed == 0)); }; then
  # The build or a test host failed before reporting: count that as a failure, never as success.
  failed=$((failed + 1))
fi

echo "${passed} passed, ${failed} failed"
((failed == 0 && status == 0))
