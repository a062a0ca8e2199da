#!/bin/sh
# Installs the `cluster` binary for this machine from a release: picks the file for the
# machine's system and processor (uname -s, uname -m) from the release's SHA256SUMS, downloads or
# copies it, checks its SHA-256, and installs it as PREFIX/bin/cluster.
#
#   sh install.sh --from https://example.com/releases/v0.2.0     # a URL holding the release files
#   sh install.sh --from dist/release --prefix ~/.local          # or a directory (npm run release)
#
# Options (or environment variables):
#   --from URL|DIR   the release: SHA256SUMS and cluster-VERSION-TARGET[.exe]   (CLUSTER_RELEASE)
#   --prefix DIR     install into DIR/bin   (CLUSTER_PREFIX; default /usr/local as root, else ~/.local)
#   --version V      the version, when SHA256SUMS lists several   (default: the newest listed)
#   --target T       linux-x64, linux-arm64, darwin-x64, darwin-arm64 or windows-x64 (default: this machine)
set -eu

from="${CLUSTER_RELEASE:-}"
prefix="${CLUSTER_PREFIX:-}"
version=""
target=""

die() {
  echo "install.sh: $*" >&2
  exit 1
}

while [ $# -gt 0 ]; do
  case "$1" in
    --from) [ $# -ge 2 ] || die "--from needs a URL or a directory"; from="$2"; shift 2 ;;
    --from=*) from="${1#*=}"; shift ;;
    --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; prefix="$2"; shift 2 ;;
    --prefix=*) prefix="${1#*=}"; shift ;;
    --version) [ $# -ge 2 ] || die "--version needs a version"; version="$2"; shift 2 ;;
    --version=*) version="${1#*=}"; shift ;;
    --target) [ $# -ge 2 ] || die "--target needs a target"; target="$2"; shift 2 ;;
    --target=*) target="${1#*=}"; shift ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option \"$1\" (see --help)" ;;
  esac
done

[ -n "$from" ] || die "no release given: use --from URL|DIR (or CLUSTER_RELEASE)"
if [ -z "$prefix" ]; then
  if [ "$(id -u)" -eq 0 ]; then prefix=/usr/local; else prefix="$HOME/.local"; fi
fi

host_target() {
  case "$(uname -s)" in
    Linux) os=linux ;;
    Darwin) os=darwin ;;
    MINGW* | MSYS* | CYGWIN* | Windows_NT) os=windows ;;
    *) die "no release binary for system \"$(uname -s)\"" ;;
  esac
  case "$(uname -m)" in
    x86_64 | amd64) cpu=x64 ;;
    aarch64 | arm64) cpu=arm64 ;;
    *) die "no release binary for processor \"$(uname -m)\"" ;;
  esac
  echo "$os-$cpu"
}
host="$(host_target)"
[ -n "$target" ] || target="$host"

# fetch NAME DEST: from the release URL or directory.
fetch() {
  case "$from" in
    http://* | https://*)
      url="${from%/}/$1"
      if command -v curl >/dev/null 2>&1; then
        curl -fsSL -o "$2" "$url" || die "cannot download \"$url\""
      elif command -v wget >/dev/null 2>&1; then
        wget -q -O "$2" "$url" || die "cannot download \"$url\""
      else
        die "need curl or wget to download \"$url\""
      fi
      ;;
    *)
      [ -f "$from/$1" ] || die "\"$from/$1\" does not exist"
      cp "$from/$1" "$2"
      ;;
  esac
}

sha256() {
  if command -v sha256sum >/dev/null 2>&1; then
    sha256sum "$1" | cut -d' ' -f1
  elif command -v shasum >/dev/null 2>&1; then
    shasum -a 256 "$1" | cut -d' ' -f1
  else
    die "need sha256sum or shasum to check the download"
  fi
}

work="$(mktemp -d "${TMPDIR:-/tmp}/cluster-install.XXXXXX")"
trap 'rm -rf "$work"' EXIT INT TERM

fetch SHA256SUMS "$work/SHA256SUMS"
exe=""
[ "${target#windows}" = "$target" ] || exe=".exe"
# Lines are "SHA256  cluster-VERSION-TARGET[.exe]"; the newest version sorts last.
line="$(grep -E "^[0-9a-f]{64}  cluster-${version:-[0-9][^ ]*}-${target}${exe}\$" "$work/SHA256SUMS" | sort -t- -k2,2V | tail -n 1 || true)"
[ -n "$line" ] || die "the release has no binary for \"$target\"${version:+ version $version} (SHA256SUMS from \"$from\")"
expected="${line%% *}"
name="${line##* }"

fetch "$name" "$work/$name"
actual="$(sha256 "$work/$name")"
[ "$actual" = "$expected" ] || die "checksum mismatch for \"$name\": expected $expected, got $actual; nothing installed"

mkdir -p "$prefix/bin" || die "cannot create \"$prefix/bin\""
dest="$prefix/bin/cluster$exe"
# Copy beside the destination, then rename: a running cluster is never half overwritten.
cp "$work/$name" "$dest.new.$$" && chmod 755 "$dest.new.$$" && mv -f "$dest.new.$$" "$dest" || die "cannot install into \"$prefix/bin\""
if [ "$target" = "$host" ]; then
  echo "installed $dest: $("$dest" --version)"
else
  echo "installed $dest ($name, for $target)"
fi
