"""`medtls update`: install a signed RAUC bundle, the health gate after a boot, and the update
status. Runs in its own process (`/usr/bin/python3 -m medtls update ...`); the serving daemon
never imports this wing (it reads the state file through `medtls.core.update`)."""
