#!/usr/bin/env bash
# Install the external engines that benchmarks/combine_vs_ccdproc.py compares against:
# IRAF 2.17 (imcombine is in images.immatch of the core `iraf` package; iraf-noao adds the
# NOAO packages and pulls in iraf) and Siril 1.0.6 (`siril` ships siril-cli).
# Idempotent: packages already installed are left alone, and apt-get is not called at all.
set -euo pipefail

packages=(iraf iraf-noao siril)
missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q '^install ok installed$'; then
        missing+=("$package")
    fi
done

if ((${#missing[@]})); then
    sudo=()
    if ((EUID != 0)); then
        sudo=(sudo)
    fi
    export DEBIAN_FRONTEND=noninteractive
    # An empty package list (fresh container) finds nothing: update it first.
    if ! apt-cache show "${missing[@]}" >/dev/null 2>&1; then
        "${sudo[@]}" apt-get update
    fi
    "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
fi

for binary in irafcl siril-cli; do
    command -v "$binary" >/dev/null || { echo "setup.sh: $binary not found after install" >&2; exit 1; }
done
echo "setup.sh: iraf $(dpkg-query -W -f='${Version}' iraf), siril $(dpkg-query -W -f='${Version}' siril)"
