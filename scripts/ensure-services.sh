#!/usr/bin/env bash
# Installs the server binaries the tests and the demo start privately (Debian's redis-server and
# influxdb 1.x) when they are missing. Never starts, stops or configures the machine's own services:
# the tests run their own servers on free loopback ports in temporary directories.
set -euo pipefail
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v influxd >/dev/null 2>&1 || missing+=(influxdb)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
  echo "ensure-services: missing ${missing[*]}; install them (apt-get install ${missing[*]}) and retry" >&2
  exit 2
fi
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
echo "ensure-services: installing ${missing[*]} from Debian's packages" >&2
# policy-rc.d 101 keeps apt from starting the packaged services: we only want the binaries.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod +x "$policy"
  created_policy=1
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
[ "$created_policy" -eq 1 ] && $SUDO rm -f "$policy"
exit 0
