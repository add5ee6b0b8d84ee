#!/bin/sh
# Image build: package scripts must not start daemons on the build host. Removed before shipping.
exit 101
