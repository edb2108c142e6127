#!/usr/bin/env bash
# Set up everything voipflow needs on a fresh Debian machine; safe to rerun.
#   system packages: real exporters and decoders used by tests and eval
#   .venv:           Python dependencies and voipflow itself (editable)
#   .cache/kafka:    Apache Kafka broker jars from Maven Central
set -euo pipefail
cd "$(dirname "$0")/.."

# openjdk + maven: the local Kafka broker is assembled from Maven Central jars.
# sip-tester (sipp) + iproute2: real SIP calls for the classifier's held-out captures.
# nftables, gobgpd, bird2: the enforcement points' dataplanes and a BGP peer for their tests.
# chromium: the report's PDF, and its tests open the page headless.
# gcc + python3-dev: the collector codec's compiled core (optional; numpy without it).
APT_PACKAGES=(softflowd nfdump tshark pmacct clickhouse-server libndpi-bin tcpreplay
  openjdk-17-jre-headless maven sip-tester iproute2 nftables gobgpd bird2 chromium
  gcc python3-dev)

say() { printf '\033[1msetup:\033[0m %s\n' "$*"; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  say "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  # tshark asks whether non-root users may capture; the answer does not matter here.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The Debian clickhouse-server package starts a server on install; tests start
# their own on free ports, so a stray one is stopped to free port 9000.
if pgrep -x clickhouse-serv >/dev/null 2>&1 || pgrep -f "clickhouse-server --config" >/dev/null 2>&1; then
  (service clickhouse-server stop || pkill -f "clickhouse-server --config") >/dev/null 2>&1 || true
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.voipflow-installed
# The install also builds the collector's compiled core (setup.py: collectors/codec/_walk.c,
# collectors/_recv.c) with the system C compiler; without one it runs on numpy alone.
want=$(cat pyproject.toml setup.py collectors/codec/_walk.c collectors/_recv.c | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  say "installing Python packages into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[dev]"
  echo "$want" > "$stamp"
fi

if .venv/bin/voipflow kafka --help >/dev/null 2>&1; then
  .venv/bin/voipflow kafka fetch
fi
say "ready"
