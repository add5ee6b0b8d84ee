# Images: the offline Debian image (arm64, Raspberry Pi 3/4), the pi-gen build, and QEMU boot tests.
# See docs/image.md. Build products go to build/image/ and deploy/ (both gitignored).
.PHONY: image image-debian bundle setup-image-apt test-image test-image-arm64 test-image-deploy \
	test-image-static lint-image
TEST_STAGES += test-image-static test-image-arm64
LINT_TARGETS += lint-image

IMAGE_BUILD := $(ROOT)/build/image
DEPLOY_DIR ?= $(ROOT)/deploy
# First user of the shipped image: no password, SSH public key only (a key line or a .pub file).
FIRST_USER_NAME ?= medtls-admin
FIRST_USER_SSH_KEY ?=
# Extra ansible-playbook arguments for the image play, e.g. -e @site.yml for a site's config.
IMAGE_PLAYBOOK_ARGS ?=
IMAGE_NAME ?= medtls-debian-trixie-arm64
# pi-gen: arm64 branch (Raspberry Pi OS 64-bit, trixie), pinned by commit; see docs/image.md
# ("Pinning and bumping pi-gen": chosen from pi-gen's source as stored, not fetched from here).
PIGEN_REPO ?= https://github.com/RPi-Distro/pi-gen.git
PIGEN_BRANCH ?= arm64
PIGEN_COMMIT ?= 5fe4c02bcf884fbb8fa994c7ec17a37658fb5a9b
PIGEN_DOCKER ?= 0

# The boot test's VM has QEMU's RTC but no NTP server; the shipped image keeps waiting for NTP.
IMAGE_TEST_PLAYBOOK_ARGS := -e medtls_hardening_time_wait_sync=false
IMAGE_TEST_ENV = MEDTLS_TEST_GUEST=1 FIRST_USER_SSH_KEY=$(IMAGE_BUILD)/test-key.pub \
	MEDTLS_PLAYBOOK_ARGS="$(IMAGE_TEST_PLAYBOOK_ARGS)"
IMAGE_PYTEST = $(PY) -m pytest -q -p no:cacheprovider
# No build, no network: pi-gen stage and parity, package lists, the SBOM generator and validator.
# test_bundle.py: signed RAUC bundles from a tiny ext4, the keys and refusals (seconds, host rauc).
IMAGE_STATIC_TESTS := image/tests/test_pigen_stage.py image/tests/test_package_lists.py \
	image/tests/test_data_seed.py \
	image/tests/test_sbom.py image/tests/test_bundle.py
# Update bundles (docs/updates.md, "Bundles and keys"). Signing: MEDTLS_RAUC_CERT/MEDTLS_RAUC_KEY
# (files or PKCS#11 URIs), trusted by the image: MEDTLS_RAUC_KEYRING; unset, the throwaway test PKI
# that the scripts make once in build/rauc-pki.
BUNDLE_DIR := $(ROOT)/build/bundle

setup-image-apt:
	scripts/setup-apt.sh setup/apt/image.list

test-image-static: setup-venv setup-image-apt ## the image tests that need no build (seconds; also first in test-image-arm64)
	$(IMAGE_PYTEST) $(IMAGE_STATIC_TESTS)

lint-image: ## shellcheck the scripts without a .sh suffix that end up in images
	shellcheck -s sh image/files/medtls-firstboot image/files/medtls-growroot image/files/medtls-data-seed \
		image/files/medtls-machine-id.initramfs image/tests/guest/medtls-boot-report
	shellcheck -x image/pi-gen/build.sh image/pi-gen/stage-medtls/prerun.sh image/pi-gen/stage-medtls/*/*.sh
	shellcheck -s bash image/pi-gen/config image/pi-gen/stage-medtls/EXPORT_IMAGE

image-debian: setup deb ## offline arm64 SD-card image from Debian's archive -> deploy/*.img.xz + .sha256
	FIRST_USER_NAME='$(FIRST_USER_NAME)' FIRST_USER_SSH_KEY='$(FIRST_USER_SSH_KEY)' \
	MEDTLS_PLAYBOOK_ARGS='$(IMAGE_PLAYBOOK_ARGS)' MEDTLS_IMAGE_NAME='$(IMAGE_NAME)' \
		image/scripts/build-image.sh arm64 $(IMAGE_BUILD)/arm64
	image/scripts/publish.sh $(IMAGE_BUILD)/arm64/disk.img $(DEPLOY_DIR) $(IMAGE_NAME)

# The bundle's payload is the image's own root filesystem (build-image.sh keeps it as rootfs.ext4).
bundle: image-debian setup-image-apt ## signed RAUC update bundle (verity) of that image's root filesystem -> build/bundle/
	image/scripts/make-bundle.sh $(IMAGE_BUILD)/arm64/rootfs.ext4 $(BUNDLE_DIR)/

$(IMAGE_BUILD)/test-key.pub:
	mkdir -p $(IMAGE_BUILD)
	ssh-keygen -q -t ed25519 -N '' -C medtls-boot-test -f $(IMAGE_BUILD)/test-key

# Build an image for ARCH with the test guest unit and boot it in QEMU with the boot tests;
# test_update.py (arm64 only) takes one disk through the A/B update cases (docs/updates.md).
# $(1): arch, $(2): extra environment for build-image.sh
define image_build_and_boot
	$(IMAGE_PYTEST) $(IMAGE_STATIC_TESTS)
	$(IMAGE_TEST_ENV) $(2) image/scripts/build-image.sh $(1) $(IMAGE_BUILD)/test-$(1)
	rm -rf $(IMAGE_BUILD)/pytest-$(1)
	MEDTLS_IMAGE_DIR=$(IMAGE_BUILD)/test-$(1) MEDTLS_IMAGE_ARCH=$(1) \
		$(IMAGE_PYTEST) --basetemp=$(IMAGE_BUILD)/pytest-$(1) \
		image/tests/test_boot.py image/tests/test_boot_invalid.py image/tests/test_pi_boot.py \
		image/tests/test_update.py
endef

# In `make test`: the image users flash (arm64, raspi-firmware), built under qemu-user and booted in
# qemu-system-aarch64, plus the pi-gen stage and package-list tests.
test-image-arm64: setup deb $(IMAGE_BUILD)/test-key.pub ## pi-gen stage layout, package lists, arm64 image build + boot test in qemu-system-aarch64 (~15 min)
	$(call image_build_and_boot,arm64,)

# Developer loop: the same playbook and boot tests on an amd64 root, no emulation (~3 min).
test-image: setup deb $(IMAGE_BUILD)/test-key.pub ## the same on an amd64 image (fast, no emulation)
	$(call image_build_and_boot,amd64,MEDTLS_FAT_MIB=64)

# Boot test of a published image as it is (deploy/*.img.xz, newest unless IMAGE=... is given):
# prepare-boot.sh adds only the test's report unit to a copy.
IMAGE ?= $(lastword $(sort $(wildcard $(DEPLOY_DIR)/$(IMAGE_NAME)-*.img.xz)))
test-image-deploy: setup-venv ## boot the published arm64 image (IMAGE=deploy/....img.xz) in QEMU with the boot tests
	@[ -n "$(IMAGE)" ] || { echo "no $(DEPLOY_DIR)/$(IMAGE_NAME)-*.img.xz: run make image-debian first" >&2; exit 2; }
	(cd $(dir $(IMAGE)) && sha256sum -c $(notdir $(IMAGE)).sha256)
	image/tests/prepare-boot.sh $(IMAGE) $(IMAGE_BUILD)/deploy-boot
	rm -rf $(IMAGE_BUILD)/pytest-deploy
	MEDTLS_IMAGE_DIR=$(IMAGE_BUILD)/deploy-boot MEDTLS_IMAGE_ARCH=arm64 \
		$(IMAGE_PYTEST) --basetemp=$(IMAGE_BUILD)/pytest-deploy \
		image/tests/test_boot.py image/tests/test_boot_invalid.py image/tests/test_pi_boot.py

image: setup deb ## Raspberry Pi OS Lite 64-bit image with pi-gen + the medtls stage -> deploy/
	PIGEN_REPO='$(PIGEN_REPO)' PIGEN_BRANCH='$(PIGEN_BRANCH)' PIGEN_COMMIT='$(PIGEN_COMMIT)' \
	PIGEN_DOCKER='$(PIGEN_DOCKER)' FIRST_USER_NAME='$(FIRST_USER_NAME)' \
	FIRST_USER_SSH_KEY='$(FIRST_USER_SSH_KEY)' MEDTLS_PLAYBOOK_ARGS='$(IMAGE_PLAYBOOK_ARGS)' \
		image/pi-gen/build.sh $(IMAGE_BUILD)/pi-gen $(DEPLOY_DIR)
