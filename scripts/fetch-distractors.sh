#!/usr/bin/env bash
# Unpack Debian's wallpaper packages into DIR (default ~/.cache/artlens/distractors) for `artlens bench scale
# --debian-root DIR`: real images under their packages' licences (each package's usr/share/doc/*/copyright).
# Needs apt-get and dpkg-deb (Debian or Ubuntu); nothing is installed into the system.
set -euo pipefail
dir="${1:-$HOME/.cache/artlens/distractors}"
packages=(gnome-backgrounds mate-backgrounds plasma-workspace-wallpapers desktop-base cinnamon-desktop-data)
mkdir -p "$dir/debs"
cd "$dir/debs"
for package in "${packages[@]}"; do
  ls "${package}"_*.deb >/dev/null 2>&1 || apt-get download "$package"
done
for package in "${packages[@]}"; do
  deb=$(ls "${package}"_*.deb | head -n1)
  dpkg-deb -x "$deb" "$dir"
  # The file list tells `artlens bench scale` which images came from which package (and so their licence).
  dpkg-deb -c "$deb" | awk '{print $NF}' | sed 's|^\./|/|' > "$dir/$package.list"
done
echo "$dir"
