#!/usr/bin/env bash
# apt-install.sh PACKAGE...: installs the Debian packages that are not yet
# installed (nothing, and no apt-get update, when all are). Used by every
# install script so the check and the install stay one piece.
set -euo pipefail
missing=()
for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
        || missing+=("$p")
done
((${#missing[@]})) || exit 0
printf 'apt-install: apt-get install %s\n' "${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
