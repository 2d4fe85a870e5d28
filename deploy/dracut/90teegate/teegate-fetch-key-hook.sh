#!/bin/sh
# dracut initqueue/online hook (non-systemd initramfs): fetch the disk key once the network is up.
type info >/dev/null 2>&1 || . /lib/dracut-lib.sh
[ -e /run/teegate/luks.key ] && return 0
info "teegate: fetching the disk passphrase from the KBS"
/usr/lib/teegate/teegate-fetch-key /etc/teegate/attester.conf || warn "teegate: could not fetch the disk passphrase"
