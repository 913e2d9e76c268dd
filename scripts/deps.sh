#!/bin/sh
# Installs the Debian packages the build and the tests need; quiet and quick
# when they are all there already.
set -e
PKGS="redis-server redis-sentinel redis-tools build-essential pkg-config lua5.4 liblua5.4-dev libev-dev libyajl-dev libhttp-parser-dev
libsodium-dev lua-busted lua-check lua-cjson lua-socket lua-system curl iproute2 nftables gcovr cppcheck procps
clang libclang-rt-14-dev clang-format nginx-light iputils-arping man-db groff-base
chromium python3-websocket python3 python3-venv python3-setuptools python3-wheel python3-aiohttp
prometheus lua-yaml libssl-dev openssl lua-sec"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps: installing$missing"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
  --no-install-recommends $missing >/dev/null
