#!/usr/bin/env bash
# Archive $BACKUP_SOURCE into the run's output directory as a dated tarball,
# with a checksum file next to it. Both are recorded with the run.
set -euo pipefail

source_dir="${BACKUP_SOURCE:?set BACKUP_SOURCE to the directory to back up}"
out="${PUPPEMON_OUTPUT_DIR:?not running inside puppemon}"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
name="backup-$(basename "$source_dir")-$stamp.tar.gz"

if [ ! -d "$source_dir" ]; then
    echo "backup.sh: $source_dir is not a directory" >&2
    exit 2
fi

# Write under a temporary name first: a run killed by its timeout must not
# leave something that looks like a finished archive.
tar -C "$(dirname "$source_dir")" -czf "$out/$name.partial" "$(basename "$source_dir")"
mv "$out/$name.partial" "$out/$name"
(cd "$out" && sha256sum "$name" > "$name.sha256")

files="$(tar -tzf "$out/$name" | grep -vc '/$' || true)"
size="$(wc -c < "$out/$name" | tr -d ' ')"
echo "archived $files files from $source_dir into $name ($size bytes)"

if [ "${BACKUP_KEEP_LOCAL:-0}" -gt 0 ]; then
    dest="${BACKUP_DIR:?set BACKUP_DIR to keep local copies}"
    mkdir -p "$dest"
    cp "$out/$name" "$out/$name.sha256" "$dest/"
    # Names end in a UTC timestamp, so the glob lists them oldest first.
    archives=("$dest"/backup-"$(basename "$source_dir")"-*.tar.gz)
    excess=$(( ${#archives[@]} - BACKUP_KEEP_LOCAL ))
    for (( i = 0; i < excess; i++ )); do
        rm -f "${archives[i]}" "${archives[i]}.sha256"
    done
fi
