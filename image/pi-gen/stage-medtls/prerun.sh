#!/bin/bash -e
# pi-gen runs this before the sub-stages: start from the previous stage's (stage2, Lite) rootfs.
if [ ! -d "${ROOTFS_DIR}" ]; then
	copy_previous
fi
