"""The operations tests need a daemon that speaks sd_notify (issue 6). Until medtls sends READY=1
the scenario deploys the unit as Type=simple (molecule/shared/vars.yml) and they are skipped."""

import pytest


@pytest.fixture(autouse=True)
def _needs_notify_unit(request, host):
    if request.node.path.name != "test_ops_watchdog.py":
        return
    unit_type = host.check_output("systemctl show -P Type medtls.service")
    if unit_type not in ("notify", "notify-reload"):
        pytest.skip(f"medtls.service is Type={unit_type}: the daemon does not send READY=1 yet")
