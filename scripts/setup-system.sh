#!/usr/bin/env bash
# The system packages the pipeline and its tests need, in one command (Debian 12 or newer):
#   dataset-fashion-mnist  the offline default data (/usr/share/datasets/fashion-mnist)
#   chromium               the MLflow UI test's headless browser
#   postgresql             the tracking-server test's database (the server is started by the test itself)
#   gcc, g++, git          the fused counting kernel, a torch extension (pure-torch fallback without it); the
#                          run's git commit tag
# Installs only what is missing. Works as root (no sudo needed) and as a user with sudo:
#   bash scripts/setup-system.sh
set -euo pipefail

PACKAGES=(dataset-fashion-mnist chromium postgresql gcc g++ git)

missing=()
for package in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "system packages: all present (${PACKAGES[*]})"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: no apt-get here; install ${missing[*]} with this system's package manager" >&2
  exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "error: installing ${missing[*]} needs root: run this script as root, or install sudo" >&2
  exit 1
fi

echo "system packages: installing ${missing[*]}"
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
echo "system packages: installed ${missing[*]}"
