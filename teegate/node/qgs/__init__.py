"""TDX Quote Generation Service (QGS): protocol, server, QEMU-compatible client, backends."""
