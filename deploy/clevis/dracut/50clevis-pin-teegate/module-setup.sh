#!/bin/bash
# dracut module for the clevis "teegate" pin: lets `clevis luks unlock` in the initramfs
# re-attest to the KBS. Install into /usr/lib/dracut/modules.d/50clevis-pin-teegate/.
TEEGATE_PREFIX="${TEEGATE_PREFIX:-/opt/teegate}"

check() {
    require_binaries clevis-decrypt-teegate jose || return 1
    [ -x "$TEEGATE_PREFIX/bin/teegate-attester" ] || return 1
    return 0
}

depends() {
    echo clevis network
    return 0
}

install() {
    local f
    inst_multiple clevis-decrypt-teegate jose mktemp python3
    while IFS= read -r f; do
        inst_simple "$f"
    done < <(find "$TEEGATE_PREFIX" -path '*/__pycache__' -prune -o \( -type f -o -type l \) -print)
    while IFS= read -r f; do
        inst_simple "$f"
    done < <(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])' \
        | xargs -I{} find {} -path '*/__pycache__' -prune -o -path '*/test' -prune -o -type f -print)
    ln_r "$TEEGATE_PREFIX/bin/teegate-attester" /usr/bin/teegate-attester
    # The KBS is reached over the network: bring it up in the initramfs.
    if [[ $hostonly ]]; then
        echo "rd.neednet=1" > "${initdir}/etc/cmdline.d/99clevis-pin-teegate.conf"
    fi
}
