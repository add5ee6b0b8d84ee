# Security evidence of docs/security.md (issue 8): TLS scan of the inbound listener, systemd
# sandbox exposure of the medtls unit, Lynis hardening index of the appliance. Reports: build/audit.
.PHONY: test-audit audit audit-tls audit-unit audit-lynis
TEST_STAGES += test-audit

AUDIT_OUT := $(ROOT)/build/audit
AUDIT_PY := PYTHONPATH=$(ROOT)/audit $(PY)

test-audit: setup-venv ## testssl against medtls run (B.12/B.13 protocols and suites) + checker unit tests
	cd audit && $(PY) -m pytest -q -p no:cacheprovider tests

audit-tls: setup-venv ## testssl report of the inbound listener per profile -> build/audit/tls-scan.txt
	$(AUDIT_PY) -m medtls_audit.tlsscan --out $(AUDIT_OUT)

audit-unit: setup-venv ## systemd-analyze security of the unit roles/proxy renders -> build/audit
	$(AUDIT_PY) -m medtls_audit.unit --out $(AUDIT_OUT)

# The Lynis run is molecule/default/tests/test_lynis.py (the whole appliance); it leaves build/audit/lynis-report.dat.
# AUDIT_LYNIS_REUSE=1 keeps the report of the last appliance run (e.g. from make test-molecule):
# the scenario's container name is fixed, so it must not run twice at the same time.
AUDIT_LYNIS_REUSE ?= 0
audit-lynis: setup-venv ## the default (whole appliance) Molecule scenario, Lynis index vs audit/lynis-baseline.txt
	@if [ "$(AUDIT_LYNIS_REUSE)" = 1 ] && [ -s $(AUDIT_OUT)/lynis-report.dat ]; then \
	  echo "audit-lynis: reusing $(AUDIT_OUT)/lynis-report.dat"; else \
	  rm -f $(AUDIT_OUT)/lynis-report.dat && $(MAKE) --no-print-directory molecule-image && \
	  molecule test -s default; fi

audit: setup-venv ## all evidence commands of docs/security.md and a summary table (keeps going on failure)
	@rc=0; for t in audit-tls audit-unit audit-lynis; do \
	  start=$$(date +%s); $(MAKE) --no-print-directory $$t || rc=1; \
	  echo "=== $$t $$(( $$(date +%s) - start ))s"; done; \
	echo; $(AUDIT_PY) -m medtls_audit.summary --out $(AUDIT_OUT) \
	  --baseline $(ROOT)/audit/lynis-baseline.txt || rc=1; exit $$rc
