#!/usr/bin/env bash
# Installs the system packages mediaflow needs (Debian/Ubuntu), only those that are missing.
#   scripts/system-deps.sh runtime   ffmpeg (with libass, libx264)
#   scripts/system-deps.sh test      + chromium (web page tests), espeak-ng, prometheus (worker metrics test)
set -euo pipefail
want=(ffmpeg)
[ "${1:-runtime}" = "test" ] && want+=(chromium espeak-ng prometheus)
missing=()
for pkg in "${want[@]}"; do
  case "$pkg" in
    chromium) command -v chromium >/dev/null 2>&1 || missing+=(chromium) ;;
    *) command -v "$pkg" >/dev/null 2>&1 || missing+=("$pkg") ;;
  esac
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "mediaflow needs: ${missing[*]} — install them with your package manager." >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "installing system packages: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
