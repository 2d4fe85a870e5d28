#!/bin/bash
# dracut module "teegate": fetch the LUKS passphrase from a KBS after TEE attestation, in the
# initramfs, before cryptsetup needs it. Install into /usr/lib/dracut/modules.d/90teegate/.
#
# Layout it expects (see docs/attester.md):
#   /opt/teegate/                      virtualenv with teegate installed (teegate-attester)
#   /usr/lib/teegate/teegate-fetch-key retry loop (deploy/systemd/teegate-fetch-key)
#   /etc/teegate/attester.conf         KBS URL, resource path, CA file, evidence provider
TEEGATE_PREFIX="${TEEGATE_PREFIX:-/opt/teegate}"

check() {
    [ -x "$TEEGATE_PREFIX/bin/teegate-attester" ] || return 1
    [ -x /usr/lib/teegate/teegate-fetch-key ] || return 1
    [ -r /etc/teegate/attester.conf ] || return 1
    # Only when asked for (dracut --add teegate) or when crypttab names our key file.
    return 255
}

depends() {
    echo crypt network
    return 0
}

install() {
    local f
    # Python and the attester's virtualenv (the interpreter, its stdlib and site-packages).
    inst_multiple python3 base64 mktemp sleep mv chmod mkdir dirname
    while IFS= read -r f; do
        inst_simple "$f"
    done < <(find "$TEEGATE_PREFIX" -path '*/__pycache__' -prune -o \( -type f -o -type l \) -print)
    while IFS= read -r f; do
        inst_simple "$f"
    done < <(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])' \
        | xargs -I{} find {} -path '*/__pycache__' -prune -o -path '*/test' -prune -o -type f -print)
    inst_simple /usr/lib/teegate/teegate-fetch-key
    inst_simple /etc/teegate/attester.conf
    # shellcheck disable=SC1091
    . /etc/teegate/attester.conf
    [ -n "${TEEGATE_CERT_FILE:-}" ] && [ -r "$TEEGATE_CERT_FILE" ] && inst_simple "$TEEGATE_CERT_FILE"
    ln_r "$TEEGATE_PREFIX/bin/teegate-attester" /usr/bin/teegate-attester

    if dracut_module_included "systemd"; then
        inst_simple "$moddir/teegate-luks-key.service" "$systemdsystemunitdir/teegate-luks-key.service"
        $SYSTEMCTL -q --root "$initdir" add-wants cryptsetup.target teegate-luks-key.service
    else
        # Non-systemd initramfs: run once the network is up, before the crypt hooks need the key.
        inst_hook initqueue/online 60 "$moddir/teegate-fetch-key-hook.sh"
    fi
    dracut_need_initqueue
}
