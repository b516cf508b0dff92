#!/usr/bin/env bash
# save-images.sh -- write the stack's images to one `docker save` archive for `make deploy` to ship.
# Usage: ansible/scripts/save-images.sh ARCHIVE [IMAGE...]   (run from the repository, after the build)
# The images are the ones named, or else whatever the compose file names at PGSTACK_IMAGE_TAG. An
# archive whose images are unchanged is kept as it is, so the playbook's copy and load are skipped.
set -Eeuo pipefail

ARCHIVE=${1:?usage: save-images.sh ARCHIVE [IMAGE...]}
shift

# images_ids: "<image> <id>" per image, the fingerprint the archive is kept or replaced by.
images_ids() {
	local image
	for image in "${IMAGES[@]}"; do
		printf '%s %s\n' "$image" "$(docker image inspect --format '{{.Id}}' "$image")"
	done
}

if (($# > 0)); then
	IMAGES=("$@")
else
	mapfile -t IMAGES < <(docker compose config --images | sort -u)
fi
if ((${#IMAGES[@]} == 0)); then
	echo "error: docker compose config --images listed no image; run this from the repository" >&2
	exit 1
fi
for image in "${IMAGES[@]}"; do
	if ! docker image inspect "$image" >/dev/null 2>&1; then
		echo "error: image $image is missing; build it first (make build)" >&2
		exit 1
	fi
done

fingerprint=$(images_ids)
if [[ -s $ARCHIVE && -s $ARCHIVE.ids && $(<"$ARCHIVE.ids") == "$fingerprint" ]]; then
	echo "images unchanged: keeping $ARCHIVE"
	exit 0
fi
mkdir -p "$(dirname "$ARCHIVE")"
echo "saving ${IMAGES[*]} to $ARCHIVE..."
docker save --output "$ARCHIVE.tmp" "${IMAGES[@]}"
mv "$ARCHIVE.tmp" "$ARCHIVE"
printf '%s\n' "$fingerprint" >"$ARCHIVE.ids"
echo "saved $(du -h "$ARCHIVE" | cut -f1) to $ARCHIVE"
