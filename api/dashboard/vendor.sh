#!/usr/bin/env bash
# Refreshes static/vendor/ from the npm registry: the built uPlot at the exact version
# package.json names, its MIT license, and the sha256 of each file. The built files are
# committed, so installing or running the service never needs npm or the network.
#   bash api/dashboard/vendor.sh
set -euo pipefail
cd "$(dirname "$0")"
version=$(node -p 'require("./package.json").dependencies.uplot')
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "uplot@$version" >/dev/null && tar xzf "uplot-$version.tgz")
cp "$tmp/package/dist/uPlot.iife.min.js" "$tmp/package/dist/uPlot.min.css" static/vendor/
cp "$tmp/package/LICENSE" static/vendor/uPlot.LICENSE
(cd static/vendor && sha256sum uPlot.iife.min.js uPlot.min.css uPlot.LICENSE > SHA256SUMS)
echo "uPlot $version -> static/vendor/"
