#!/usr/bin/env bash
# Vendor the chat page's two browser libraries from their npm packages into src/ssegate/web/vendor/.
#
# The page has no build step and loads nothing from a CDN: these files are committed, and this script is how
# they are updated. For each package it asks the registry for the version (`npm view`), downloads that
# tarball (`npm pack`, which checks npm's integrity hash), copies one ES-module file of its dist/ and its
# licence, and writes vendor/VERSIONS.txt (name, version, npm integrity, sha256 of every copied file).
#
#   scripts/vendor-web.sh            the versions pinned below
#   scripts/vendor-web.sh --latest   the newest published versions (then review the diff and test)
#
# The files are copied byte for byte; a `.js` name (instead of `.mjs`) makes every static server send them
# with a JavaScript MIME type, which browsers require of module scripts.
set -euo pipefail

MARKDOWN_IT_VERSION=15.0.3
DOMPURIFY_VERSION=3.5.0

cd "$(dirname "$0")/.."
DEST=src/ssegate/web/vendor
latest=0
[ "${1:-}" = "--latest" ] && latest=1

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# name  pinned-version  file-in-package  vendored-name  licence-files...
packages=(
  "markdown-it|$MARKDOWN_IT_VERSION|dist/browser/markdown-it.esm.min.mjs|markdown-it.esm.min.js|LICENSE"
  "dompurify|$DOMPURIFY_VERSION|dist/purify.es.mjs|purify.es.js|LICENSE LICENSE-MPL"
)

mkdir -p "$DEST"
versions="$tmp/VERSIONS.txt"
{
  echo "# The chat page's vendored libraries, written by scripts/vendor-web.sh: do not edit by hand."
  echo "# name version npm-integrity"
  echo "#   sha256  file"
} >"$versions"

for entry in "${packages[@]}"; do
  IFS='|' read -r name version src vendored licences <<<"$entry"
  if [ "$latest" = 1 ]; then
    version=$(npm view "$name" version)
  fi
  integrity=$(npm view "$name@$version" dist.integrity)
  (cd "$tmp" && npm pack --silent "$name@$version" >/dev/null)
  tarball="$tmp/$name-$version.tgz"
  actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
  if [ "$actual" != "$integrity" ]; then
    echo "vendor-web: $name $version: tarball integrity $actual, the registry says $integrity" >&2
    exit 1
  fi
  mkdir -p "$tmp/$name"
  tar -xzf "$tarball" -C "$tmp/$name"
  pkg="$tmp/$name/package"
  got=$(node -e 'console.log(require(process.argv[1]).version)' "$pkg/package.json")
  if [ "$got" != "$version" ]; then
    echo "vendor-web: $name: asked for $version, the tarball holds $got" >&2
    exit 1
  fi
  cp "$pkg/$src" "$DEST/$vendored"
  copied=("$vendored")
  for lic in $licences; do
    cp "$pkg/$lic" "$DEST/$name.$lic"
    copied+=("$name.$lic")
  done
  echo "$name $version $integrity" >>"$versions"
  for f in "${copied[@]}"; do
    echo "  $(sha256sum "$DEST/$f" | cut -d' ' -f1)  $f" >>"$versions"
  done
  echo "vendor-web: $name $version"
done

cp "$versions" "$DEST/VERSIONS.txt"
