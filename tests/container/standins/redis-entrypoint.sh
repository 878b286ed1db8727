#!/bin/sh
set -eu
chown redis:redis /data
exec runuser -u redis -- "$@" --protected-mode no
