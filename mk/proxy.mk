.PHONY: test-proxy
TEST_STAGES += test-proxy

test-proxy: setup-venv ## proxy unit and loopback integration tests
	cd proxy && $(PY) -m pytest -q -p no:cacheprovider tests
