#!/usr/bin/env bash
# Fetches the ONNX Runtime C/C++ API headers (they are in no wheel) from Debian trixie's `libonnxruntime-dev`
# package into DEST, leaving the system's apt sources, lists and caches untouched: apt runs with a one-line
# scratch source list and scratch state/cache folders under DEST, and the package is only unpacked (dpkg-deb -x),
# never installed. Called by cmake/FindOnnxRuntimeHeaders.cmake at configure time.
#
# usage: fetch_onnxruntime_headers.sh DEST
# result: DEST/usr/include/onnxruntime/onnxruntime_c_api.h (and the C++ wrapper headers)
set -euo pipefail

dest=${1:?usage: fetch_onnxruntime_headers.sh DEST}
suite=${BOXSEG_ORT_DEB_SUITE:-trixie}
package=${BOXSEG_ORT_DEB_PACKAGE:-libonnxruntime-dev}

for tool in apt-get dpkg-deb; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "fetch_onnxruntime_headers: '$tool' not found (this fetch needs a Debian-like system)." >&2
    exit 3
  fi
done

# Reuse the machine's own Debian mirror and keyring (the first non-security entry), with safe defaults.
uri=""
keyring=""
if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
  uri=$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | grep debian | head -n1 || true)
  keyring=$(grep -h '^Signed-By:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | head -n1 || true)
fi
if [[ -z "$uri" && -f /etc/apt/sources.list ]]; then
  uri=$(grep -E '^deb ' /etc/apt/sources.list | grep -v security | grep -oE 'https?://[^ ]+' | grep debian | head -n1 || true)
fi
uri=${uri:-http://deb.debian.org/debian}
if [[ -z "$keyring" || ! -f "$keyring" ]]; then
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg
fi
if [[ ! -f "$keyring" ]]; then
  echo "fetch_onnxruntime_headers: Debian archive keyring not found ($keyring)." >&2
  exit 3
fi

scratch="$dest/.apt"
mkdir -p "$scratch/lists/partial" "$scratch/cache/archives/partial" "$scratch/download"
echo "deb [signed-by=$keyring] $uri $suite main" >"$scratch/sources.list"
apt_opts=(
  -o "Dir::Etc::SourceList=$scratch/sources.list"
  -o "Dir::Etc::SourceParts=/nonexistent"
  -o "Dir::State::Lists=$scratch/lists"
  -o "Dir::Cache=$scratch/cache"
  -o "APT::Sandbox::User=root"
  -o "Debug::NoLocking=1"
)
echo "fetch_onnxruntime_headers: $package from $uri $suite" >&2
apt-get -qq "${apt_opts[@]}" update >&2
(cd "$scratch/download" && apt-get -qq "${apt_opts[@]}" download "$package" >&2)
deb=$(ls "$scratch"/download/"${package}"_*.deb | head -n1)
dpkg-deb -x "$deb" "$dest"
rm -rf "$scratch"
if [[ ! -f "$dest/usr/include/onnxruntime/onnxruntime_c_api.h" ]]; then
  echo "fetch_onnxruntime_headers: $deb has no usr/include/onnxruntime/onnxruntime_c_api.h" >&2
  exit 4
fi
echo "$dest/usr/include/onnxruntime"
