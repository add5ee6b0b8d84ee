#!/bin/bash -e
# Runs on the build host (not in the chroot): the same scripts and playbook as the offline image,
# applied to ${ROOTFS_DIR}. No Ansible is installed into the image.
: "${MEDTLS_REPO:?MEDTLS_REPO must point at the medtls repository (set by image/pi-gen/build.sh)}"
: "${MEDTLS_SBOM_OUT:?MEDTLS_SBOM_OUT must name the SBOM file (set by image/pi-gen/build.sh)}"

# pi-gen owns fstab (PARTUUIDs, set at export) and has made the first user from
# FIRST_USER_NAME / PUBKEY_SSH_FIRST_USER; configure-rootfs.sh locks every password.
MEDTLS_KEEP_FSTAB=1 "${MEDTLS_REPO}/image/scripts/configure-rootfs.sh" "${ROOTFS_DIR}"
"${MEDTLS_REPO}/image/scripts/apply-playbook.sh" "${ROOTFS_DIR}"
# The installed package set plus medtls (CycloneDX); build.sh puts it next to the exported image.
"${MEDTLS_REPO}/image/scripts/sbom.py" --rootfs "${ROOTFS_DIR}" --name "${IMG_NAME:-medtls}-pi-gen" \
	--output "${MEDTLS_SBOM_OUT}"
