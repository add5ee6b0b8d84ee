# The Debian package (packaging/debian, docs/packaging.md): `make deb` builds
# build/deb/medtls_<version>_all.deb offline; the roles and the image install that file with apt.
.PHONY: deb test-deb setup-deb
TEST_STAGES += deb test-deb

DEB_OUT := $(ROOT)/build/deb

setup-deb:
	scripts/setup-apt.sh setup/apt/deb.list

deb: setup-deb ## the medtls .deb from a clean copy of the checkout -> build/deb/
	scripts/build-deb.sh $(DEB_OUT)

test-deb: setup-venv setup-deb molecule-image ## lintian, then apt install/upgrade/downgrade + debsums in a trixie container
	$(PY) -m pytest -q -p no:cacheprovider packaging/tests
